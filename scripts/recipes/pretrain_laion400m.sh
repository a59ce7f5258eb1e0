#!/usr/bin/env bash
# Recipe: CE-CLIP pretraining from random weights on LAION-400M: ViT-B/32 with open_clip's published LAION-400M
# B/32 settings (32 epochs, batch 256 per GPU on 128 GPUs = 32,768, warm-up 2,000 steps, open_clip's default lr
# 5e-4 and weight decay 0.2, --local-loss --gather-with-grad; open_clip's README, "SLURM", and docs/PRETRAINED.md),
# plus four hard negatives per caption and the CE terms' schedule of a run from random weights
# (docs/training-from-scratch.md). Then the compositional benchmarks and zero-shot, against open_clip's own
# LAION-400M B/32 (`laion400m_e32`, plain CLIP trained with the same settings).
#
# Run the same command on every node (node 0 also runs the make-shards and evaluation steps; the other
# nodes wait for make-shards' stats.json, then join the training):
#
#   LAION_SHARDS='/data/laion400m/{00000..41455}.tar' OUT=/shared/ce-laion400m BENCH=/data/bench \
#   NNODES=32 NGPU=4 NODE_RANK=$RANK MASTER_ADDR=node0 RAY_ADDRESS=node0:6379 \
#   bash scripts/recipes/pretrain_laion400m.sh [--dry-run]
#
# Inputs (nothing is downloaded by this script):
#   LAION_SHARDS  LAION-400M as img2dataset writes it with --output_format webdataset (NNNNN.tar holding
#                 NNNNNNNNN.jpg / .txt / .json per sample); a brace pattern; on a filesystem every node reads
#   OUT           output folder on a filesystem shared by every node (hard-negative shards, checkpoints, results)
#   RAY_ADDRESS   a Ray cluster with the GPUs of the make-shards step: `ray start --head` on node 0, then
#                 `ray start --address node0:6379` on the others (pip install 'openclip-ce[ray]')
#   BENCH         (optional) the data root of `openclip-ce eval` (docs/EVAL_PROTOCOL.md); without it, no evaluation
#   NNODES NGPU NODE_RANK MASTER_ADDR MASTER_PORT   torchrun's rendezvous: nodes, GPUs per node, this node, node 0
# plus network access (or local copies) for the masked LM (FILLER_MODEL) and open_clip's laion400m_e32 weights.
#
# Every step is resumable: rerun the same command after an interruption (make-shards skips complete shards,
# training resumes from its latest checkpoint with the schedule's state, evaluations whose results exist are
# kept). --dry-run prints every step with its command and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/recipes/_recipe.sh
recipe_args "$@"
dry_placeholders LAION_SHARDS OUT BENCH
: "${LAION_SHARDS:?set LAION_SHARDS to the LAION-400M WebDataset shard pattern (img2dataset output)}"
: "${OUT:?set OUT to an output folder on a filesystem shared by every node}"
# open_clip's LAION-400M B/32 run, where it differs from the fine-tuning recipes' defaults (scripts/recipes/_recipe.sh)
PRETRAINED=""                            # from random weights: the CE terms' schedule (--ce-schedule gate)
QUICKGELU=""
NNODES=${NNODES:-32}                     # 32 nodes x 4 A100 = 128 GPUs
NGPU=${NGPU:-4}
EPOCHS=${EPOCHS:-32}
BATCH=${BATCH:-32768}                    # global, split over NNODES x NGPU: 256 per GPU
LR=${LR:-5e-4}                           # open_clip's default for ViT models (the run passed no --lr)
WD=${WD:-0.2}                            # open_clip's default (likewise)
WARMUP=${WARMUP:-2000}
PRECISION=${PRECISION:-amp}              # open_clip's default (likewise); amp_bf16 on A100 / H100
DATA_WORKERS=${DATA_WORKERS:-8}
SHARD_WORKERS=${SHARD_WORKERS:-$((NNODES * 15))}  # make-shards tasks in flight on the Ray cluster: 15 cores a node
recipe_defaults
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
IMAGENET_VAL=${IMAGENET_VAL:-}           # optional: open_clip's zero-shot ImageNet after every epoch
WORLD=$((NNODES * NGPU))
if [ $((BATCH % WORLD)) != 0 ]; then echo "$(basename "$0"): batch $BATCH is not a multiple of $WORLD GPUs" >&2; exit 2; fi
NEG="$OUT/neg/laion400m"

echo "CE-CLIP LAION-400M pretraining -> $OUT (model $MODEL from random weights, $NNODES node(s) x $NGPU GPU(s), node $NODE_RANK;"
echo "  $EPOCHS epochs, batch $BATCH ($((BATCH / WORLD)) per GPU), lr $LR, wd $WD, warm-up $WARMUP, precision $PRECISION)"
[ "$DRY_RUN" = 1 ] && echo "(dry run: nothing is executed)"

step "1/5 four hard negatives per caption (make-shards on the Ray cluster, node 0; resumable)"
if [ "$NODE_RANK" = 0 ] || [ "$DRY_RUN" = 1 ]; then
    # shellcheck disable=SC2046
    run openclip-ce make-shards "$LAION_SHARDS" --out "$NEG" --engine ray --ray-address "${RAY_ADDRESS:-auto}" \
        --workers "$SHARD_WORKERS" --device cuda --filler "$FILLER" --filler-model "$FILLER_MODEL" $(spacy_flag) \
        --seed 0 --no-progress
fi
if [ "$NODE_RANK" != 0 ] && [ "$DRY_RUN" = 0 ]; then
    echo "waiting for node 0's make-shards ($NEG/stats.json) ..."
    while [ ! -f "$NEG/stats.json" ]; do sleep 60; done
fi

step "2/5 the training data: shards and samples per epoch (make-shards' stats.json)"
if [ "$DRY_RUN" = 1 ]; then
    echo "+ (TRAIN_DATA = the complete shards of $NEG, as a brace pattern; samples = stats.json's)"
    read -r TRAIN_DATA SAMPLES <<< "$NEG/{00000..41455}.tar <samples-in-stats.json>"
else
    read -r TRAIN_DATA _ SAMPLES < <("$PY" scripts/recipes/mixture.py "$NEG")
    SAMPLES=${TRAIN_SAMPLES:-$SAMPLES}
    echo "train data: $TRAIN_DATA; samples per epoch: $SAMPLES"
fi

step "3/5 CE-CLIP from random weights, multi-node torchrun with open_clip's own main (resumable: --resume latest)"
ZEROSHOT=()
if [ -n "$IMAGENET_VAL" ]; then ZEROSHOT=(--imagenet-val "$IMAGENET_VAL" --zeroshot-frequency 1); fi
# --ce-schedule gate: IMC and CMR wait until the contrastive loss has made progress, then ramp to alpha / beta
# (the default of a run from random weights, said explicitly: a restarted run keeps it with its state)
# shellcheck disable=SC2086
run torchrun --nnodes "$NNODES" --nproc_per_node "$NGPU" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m open_clip_train.main -- \
    --model "$MODEL" --train-data "$TRAIN_DATA" --dataset-type webdataset --train-num-samples "$SAMPLES" \
    --batch-size $((BATCH / WORLD)) --epochs "$EPOCHS" --lr "$LR" --wd "$WD" --warmup "$WARMUP" \
    --precision "$PRECISION" --device "$DEVICE" --workers "$DATA_WORKERS" --local-loss --gather-with-grad \
    --loss ce_clip --ce-alpha 0.2 --ce-beta 0.4 --ce-threshold-max 10 --ce-schedule gate \
    --save-frequency 1 --report-to tensorboard "${ZEROSHOT[@]}" --seed 0 \
    --logs "$OUT/logs" --name ce-clip-laion400m --resume latest $TRAIN_EXTRA
CKPT="$OUT/logs/ce-clip-laion400m/checkpoints/epoch_$EPOCHS.pt"

if [ "$NODE_RANK" != 0 ] && [ "$DRY_RUN" = 0 ]; then exit 0; fi
if [ -z "${BENCH:-}" ]; then echo "done: $CKPT (set BENCH to evaluate it)"; exit 0; fi

step "4/5 evaluate open_clip's LAION-400M B/32 (plain CLIP, same settings) and CE-CLIP with one protocol (kept when done)"
evaluate "$OUT/results/clip-laion400m.json" --pretrained laion400m_e32
evaluate "$OUT/results/ce-clip-laion400m.json" --checkpoint "$CKPT"

step "5/5 compare"
run openclip-ce compare "$OUT/results/clip-laion400m.json" "$OUT/results/ce-clip-laion400m.json" \
    --labels CLIP-LAION400M,CE-CLIP-LAION400M --out "$OUT/results/compare"
echo
echo "done: $OUT/results/compare.md, compare.png; the training's curves: $OUT/logs/ce-clip-laion400m/train_metrics.jsonl"
