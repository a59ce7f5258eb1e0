"""Helpers to run the project's commands as a user would, in subprocesses."""

import json
import os
import shutil
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra):
    e = dict(os.environ)
    e.pop("OPENCLIP_CE_DISABLE", None)
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    e.update({k: str(v) for k, v in extra.items()})
    return e


def cli() -> list:
    """The ``openclip-ce`` command as installed (or the module, where no script is on the PATH)."""
    exe = shutil.which("openclip-ce")
    return [exe] if exe else [sys.executable, "-m", "openclip_ce.cli"]


def run(cmd, timeout=300, **env_extra):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(**env_extra))
    return proc


def torchrun(nproc, args, timeout=300, **env_extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    return run(cmd, timeout=timeout, **env_extra)


def torchrun_results(script, nproc, out, timeout=300):
    """Run ``script`` on ``nproc`` ranks with ``OUT_DIR=out``; each rank's JSON lines (``out/rank<r>.jsonl``,
    as the scripts under tests/training/dist/ write them), rank by rank."""
    proc = torchrun(nproc, [str(script)], timeout=timeout, OUT_DIR=out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [[json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in range(nproc)]
