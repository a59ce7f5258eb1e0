#!/usr/bin/env bash
# Recipe: CE-CLIP on COCO (paper Sec. 4.1, "CE-CLIP": OpenAI's ViT-B/32, COCO train2017, 5 epochs, batch 256,
# alpha 0.2, beta 0.4, u 10), then the compositional benchmarks against plain CLIP, read against the paper's
# tables, the representation analysis (paper Fig. 8) on COCO val2017, and the zero-shot trade-off (WiSE-FT).
#
#   COCO=/data/coco BENCH=/data/bench OUT=/data/ce-clip NGPU=8 bash scripts/recipes/reproduce_ce_clip_coco.sh [--dry-run]
#
# Inputs (nothing is downloaded by this script):
#   COCO   folder with train2017/, val2017/ and annotations/captions_{train,val}2017.json
#   BENCH  the benchmark data root of `openclip-ce eval` (layout: docs/evaluation.md), with zeroshot/ for the sweep
# plus network access (or local copies) for the OpenAI weights and the masked LM (FILLER_MODEL), and GPUs.
# Other settings (model, epochs, batch, lr, precision, filler, workers, extra flags): scripts/recipes/_recipe.sh.
#
# Every step is resumable: rerun the same command after an interruption (converters and make-shards
# skip complete shards, training resumes from its latest checkpoint, evaluations whose results exist
# are kept). --dry-run prints every step with its command and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/recipes/_recipe.sh
recipe_args "$@"
dry_placeholders COCO BENCH
: "${COCO:?set COCO to the folder holding train2017/, val2017/ and annotations/}"
: "${BENCH:?set BENCH to the benchmark data root}"
OUT=${OUT:-ce-clip-coco}
recipe_defaults

echo "CE-CLIP (COCO) recipe -> $OUT (model $MODEL${PRETRAINED:+ from $PRETRAINED}, $NGPU GPU(s), $EPOCHS epochs, batch $BATCH, lr $LR)"
[ "$DRY_RUN" = 1 ] && echo "(dry run: nothing is executed)"

step "1/7 COCO captions -> WebDataset shards (one caption per image: 118k samples, as NegCLIP / CE-CLIP)"
coco_shards "$OUT/wds/coco"

step "2/7 four hard negatives per caption (make-shards; resumable)"
make_negatives "$OUT/wds/coco" "$OUT/neg/coco"

step "3/7 CE-CLIP fine-tuning with open_clip's own training main (resumable: --resume latest)"
if [ "$DRY_RUN" = 1 ]; then SAMPLES='<samples in neg/coco/stats.json>'; else
    SAMPLES=${TRAIN_SAMPLES:-$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples"])' "$OUT/neg/coco/stats.json")}
    TRAIN_DATA=$("$PY" scripts/recipes/mixture.py "$OUT/neg/coco" | cut -d' ' -f1)
fi
# shellcheck disable=SC2046,SC2086
run torchrun --standalone --nproc_per_node "$NGPU" -m open_clip_train.main -- \
    --model "$MODEL" $(base_flags) $QUICKGELU \
    --train-data "${TRAIN_DATA:-$OUT/neg/coco/...}" --dataset-type webdataset --train-num-samples "$SAMPLES" \
    --batch-size $((BATCH / NGPU)) --epochs "$EPOCHS" --lr "$LR" --wd 0.1 --warmup 50 \
    --precision "$PRECISION" --device "$DEVICE" --workers "$DATA_WORKERS" \
    --loss ce_clip --ce-alpha 0.2 --ce-beta 0.4 --ce-threshold-max 10 \
    --gather-with-grad --local-loss --logs "$OUT/logs" --name ce-clip --resume latest $TRAIN_EXTRA
CKPT="$OUT/logs/ce-clip/checkpoints/epoch_$EPOCHS.pt"

step "4/7 evaluate CLIP and CE-CLIP with one protocol (kept when done)"
# shellcheck disable=SC2046
evaluate "$OUT/results/clip.json" $(base_flags)
evaluate "$OUT/results/ce-clip.json" --checkpoint "$CKPT"

step "5/7 compare, against the paper's tables"
run openclip-ce compare "$OUT/results/clip.json" "$OUT/results/ce-clip.json" --labels CLIP,CE-CLIP \
    --reference paper --out "$OUT/results/compare"

step "6/7 representation analysis (paper Fig. 8) on COCO val2017 with its own hard negatives"
run "$PY" scripts/recipes/coco_to_wds.py --images "$COCO/val2017" \
    --captions "$COCO/annotations/captions_val2017.json" --out "$OUT/wds/coco-val" --per-shard 5000
make_negatives "$OUT/wds/coco-val" "$OUT/neg/coco-val"
done_already "$OUT/results/fig8.json" ||
    run openclip-ce analyze --model "$MODEL$(base_flags analyze),label=CLIP" \
        --model "$MODEL,checkpoint=$CKPT,label=CE-CLIP" --data "$OUT/neg/coco-val/00000.tar" --device "$DEVICE" \
        --out "$OUT/results/fig8"

step "7/7 keep zero-shot accuracy: WiSE-FT interpolation CLIP -> CE-CLIP, one protocol per alpha"
sweep "$CKPT" "$OUT/results/wise-ft"
echo
echo "done: $OUT/results/compare.md (with the paper's numbers), fig8.png, wise-ft.md / .png (the trade-off)"
