#!/usr/bin/env bash
# Pure-Python packages a bare GPU machine lacks (it has torch and transformers, hence regex, numpy,
# huggingface_hub, safetensors), built here for its Python 3.12 and packed into .device/bundle.tar.xz
# (ignored by git; copy it to the GPU machine with the repository). There, unpack and put it first on
# PYTHONPATH:   mkdir -p /tmp/dev && tar xJf .device/bundle.tar.xz -C /tmp/dev && export PYTHONPATH=/tmp/dev:$PWD
# Usage: bash scripts/gpu_checks/bundle.sh [extra pip requirement ...]   (e.g. spacy's stack for make-shards)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --implementation cp -d "$dir/wheels" \
    'open_clip_torch==3.3.0' 'webdataset==0.2.86' braceexpand ftfy wcwidth "$@"
mkdir -p "$dir/site"
for w in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$w" "$dir/site"; done
find "$dir/site" -name '*.so' -delete          # pure Python only: compiled parts come from the machine's image
find "$dir/site" -name '__pycache__' -prune -exec rm -rf {} +
mkdir -p .device
tar cJf .device/bundle.tar.xz -C "$dir/site" .
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
du -h .device/bundle.tar.xz
rm -rf "$dir"
