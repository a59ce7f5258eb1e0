#!/usr/bin/env bash
# Recipe: CE-CLIP+ (paper Sec. 4.1): OpenAI's ViT-B/32 fine-tuned with CE-CLIP on COCO + CC3M + Visual
# Genome together, then the compositional benchmarks against plain CLIP, read against the paper's tables.
#
#   COCO=/data/coco CC3M_SHARDS='/data/cc3m/{00000..00331}.tar' VG=/data/vg BENCH=/data/bench \
#   OUT=/data/ce-clip-plus bash scripts/recipes/reproduce_ce_clip_plus.sh [--dry-run]
#
# Inputs (nothing is downloaded by this script):
#   COCO         folder with train2017/ and annotations/captions_train2017.json
#   CC3M_SHARDS  CC3M as WebDataset shards, the layout img2dataset writes (jpg + txt per sample); a brace pattern
#   VG           Visual Genome 1.2: region_descriptions.json and the images in VG_100K/ and VG_100K_2/
#   BENCH        the benchmark data root of `openclip-ce eval` (layout: docs/evaluation.md)
# plus network access (or local copies) for the OpenAI weights and the masked LM (FILLER_MODEL), and GPUs.
#
# The mixture (the paper does not state one): sampled with replacement (open_clip's --dataset-resampled)
# with --train-data-upsampling-factors chosen so that each source gives the share MIX (default 1:1:1) of
# every epoch, and an epoch of 3x COCO's size. So COCO's captions are seen EPOCHS times, as in the COCO
# recipe, with as many Visual Genome regions and CC3M pairs beside them; without the factors CC3M's ~3M
# noisy alt-texts would be ~80% of what the model sees and drown the human-written COCO and VG captions
# that the compositional benchmarks resemble. Change MIX / TRAIN_SAMPLES to explore.
#
# Every step is resumable: rerun the same command after an interruption (converters skip complete
# shards, make-shards skips complete shards, training resumes from its latest checkpoint, evaluations
# whose results exist are kept). --dry-run prints every step with its command and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/recipes/_recipe.sh
recipe_args "$@"
dry_placeholders COCO CC3M_SHARDS VG BENCH
: "${COCO:?set COCO to the folder holding train2017/ and annotations/}"
: "${CC3M_SHARDS:?set CC3M_SHARDS to the CC3M WebDataset shard pattern (img2dataset output)}"
: "${VG:?set VG to the Visual Genome folder (region_descriptions.json, VG_100K/, VG_100K_2/)}"
: "${BENCH:?set BENCH to the benchmark data root}"
OUT=${OUT:-ce-clip-plus}
MIX=${MIX:-1:1:1}  # shares of COCO : CC3M : VG in every epoch
recipe_defaults

echo "CE-CLIP+ recipe -> $OUT (model $MODEL${PRETRAINED:+/$PRETRAINED}, $NGPU GPU(s), $EPOCHS epochs, batch $BATCH, lr $LR, mix COCO:CC3M:VG = $MIX)"
[ "$DRY_RUN" = 1 ] && echo "(dry run: nothing is executed)"

step "1/8 COCO captions -> WebDataset shards (one caption per image, as NegCLIP / CE-CLIP)"
coco_shards "$OUT/wds/coco"

step "2/8 Visual Genome regions -> WebDataset shards (ARO's test images left out)"
EXCLUDE=()
for f in "$BENCH/aro/visual_genome_relation.json" "$BENCH/aro/visual_genome_attribution.json"; do
    if [ -f "$f" ] || [ "$DRY_RUN" = 1 ]; then EXCLUDE+=(--exclude-images "$f"); fi
done
run "$PY" scripts/recipes/vg_to_wds.py --regions "$VG/region_descriptions.json" --images "$VG/VG_100K" \
    --images "$VG/VG_100K_2" --out "$OUT/wds/vg" --per-shard 5000 "${EXCLUDE[@]}"

step "3/8 four hard negatives per caption (make-shards; resumable)"
make_negatives "$OUT/wds/coco" "$OUT/neg/coco"
make_negatives "$OUT/wds/vg" "$OUT/neg/vg"
make_negatives "$CC3M_SHARDS" "$OUT/neg/cc3m"

step "4/8 the mixture: upsampling factors from the sources' sizes (make-shards' stats.json)"
if [ "$DRY_RUN" = 1 ]; then
    echo "+ (factors = share / samples per source, from $OUT/neg/{coco,cc3m,vg}/stats.json)"
    TRAIN_DATA="$OUT/neg/coco/...::$OUT/neg/cc3m/...::$OUT/neg/vg/..."
    FACTORS="f_coco::f_cc3m::f_vg"
    TRAIN_SAMPLES=${TRAIN_SAMPLES:-"3x COCO"}
else
    read -r TRAIN_DATA FACTORS DEFAULT_SAMPLES < <("$PY" scripts/recipes/mixture.py --mix "$MIX" \
        "$OUT/neg/coco" "$OUT/neg/cc3m" "$OUT/neg/vg")
    TRAIN_SAMPLES=${TRAIN_SAMPLES:-$DEFAULT_SAMPLES}
    echo "train data: $TRAIN_DATA"
    echo "upsampling factors: $FACTORS; samples per epoch: $TRAIN_SAMPLES"
fi

step "5/8 CE-CLIP+ fine-tuning with open_clip's own training main (resumable: --resume latest)"
# shellcheck disable=SC2046,SC2086
run torchrun --standalone --nproc_per_node "$NGPU" -m open_clip_train.main -- \
    --model "$MODEL" $(base_flags) $QUICKGELU \
    --train-data "$TRAIN_DATA" --train-data-upsampling-factors "$FACTORS" --dataset-resampled \
    --dataset-type webdataset --train-num-samples "$TRAIN_SAMPLES" \
    --batch-size $((BATCH / NGPU)) --epochs "$EPOCHS" --lr "$LR" --wd 0.1 --warmup 50 \
    --precision "$PRECISION" --device "$DEVICE" --workers "$DATA_WORKERS" \
    --loss ce_clip --ce-alpha 0.2 --ce-beta 0.4 --ce-threshold-max 10 \
    --gather-with-grad --local-loss --logs "$OUT/logs" --name ce-clip-plus --resume latest $TRAIN_EXTRA

step "6/8 evaluate CLIP and CE-CLIP+ with one protocol (kept when done)"
CKPT="$OUT/logs/ce-clip-plus/checkpoints/epoch_$EPOCHS.pt"
# shellcheck disable=SC2046
evaluate "$OUT/results/clip.json" $(base_flags)
evaluate "$OUT/results/ce-clip-plus.json" --checkpoint "$CKPT"

step "7/8 compare, against the paper's tables"
run openclip-ce compare "$OUT/results/clip.json" "$OUT/results/ce-clip-plus.json" --labels CLIP,CE-CLIP+ \
    --reference paper --out "$OUT/results/compare"

step "8/8 keep zero-shot accuracy: WiSE-FT interpolation CLIP -> CE-CLIP+, one protocol per alpha"
sweep "$CKPT" "$OUT/results/wise-ft"
echo
echo "done: $OUT/results/compare.md (with the paper's numbers), compare.png, wise-ft.md / .png (the trade-off)"
