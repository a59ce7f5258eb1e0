#!/usr/bin/env bash
# Confirm the evaluation protocol on your machine before trusting a comparison: run `openclip-ce eval`
# on OpenAI's CLIP ViT-B/32 and print our numbers beside the published ones (the benchmarks' papers
# and repositories; table, sources and tolerances in docs/evaluation.md, "Published results").
#
# Needs: the benchmark files under $BENCH (layout in docs/evaluation.md) and the OpenAI weights
# (open_clip downloads them, or set MODEL/PRETRAINED to a local copy). Extra arguments go to `eval`.
#
#   BENCH=/data/bench bash scripts/recipes/verify_published_numbers.sh [--device cuda --batch-size 256 ...]
#
# Writes $OUT/ours.json (+ .md) and $OUT/published.md. Exit status: 0 when every checked metric the
# run produced is within its tolerance, 1 when one differs (or nothing could be checked), 2 on an error.
# MODEL / PRETRAINED override the model (the tests run the whole path on a tiny local model and
# fixture data this way; the published numbers then do not apply, and the table says so).
set -euo pipefail
: "${BENCH:?set BENCH to the benchmark data root (layout in docs/evaluation.md)}"
OUT=${OUT:-check-eval-published}
MODEL=${MODEL:-ViT-B-32}
PRETRAINED=${PRETRAINED-openai}
PYTHON=${PYTHON:-python}

model_args=(--model "$MODEL")
if [ -n "$PRETRAINED" ]; then model_args+=(--pretrained "$PRETRAINED"); fi

"$PYTHON" -m openclip_ce.cli eval "${model_args[@]}" --data-root "$BENCH" --out "$OUT/ours.json" "$@"
"$PYTHON" -m openclip_ce.evaluate.published "$OUT/ours.json" --out "$OUT/published.md"
