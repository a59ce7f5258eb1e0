"""Atomic file writes shared by every command: a temporary file in the target's folder, then
``os.replace``, so a reader never sees a half-written file and a crash leaves the old one intact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the rename: a power cut leaves old or new, not empty
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    """``obj`` as JSON, ASCII-escaped (keys from undecodable tar member names carry lone surrogates)."""
    write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=True) + "\n")
