"""Helpers to run the project's commands as a user would, in subprocesses."""

import os
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


def run(cmd, timeout=300, **env_extra):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(**env_extra))
    return proc


def torchrun(nproc, args, timeout=300, **env_extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    return run(cmd, timeout=timeout, **env_extra)
