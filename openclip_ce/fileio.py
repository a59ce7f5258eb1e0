"""Atomic file writes shared by every command: a temporary file in the target's folder, then
``os.replace``, so a reader never sees a half-written file and a crash leaves the old one intact."""

from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any


def _create_temporary(path: Path) -> tuple:
    """A new file next to ``path``, created with mode 0666 so that the kernel applies the process's
    umask (as ``open()`` does for the target itself): results are meant to be shared. Reading the umask
    would need ``os.umask``, which sets it process-wide and races with other threads."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def check_output(path: str | os.PathLike) -> None:
    """Fail now, before hours of work, where :func:`write_atomic` could not write ``path`` later: ``path`` a
    folder, or its nearest existing ancestor a file or a folder this process cannot write. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    for parent in path.parents:
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, f"cannot write into {parent}", str(path))
            return
        if parent.exists() or parent.is_symlink():
            raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a folder", str(path))


def check_prefix(prefix: str | os.PathLike, suffix: str = ".json") -> Path:
    """``--out OUT`` of a command that writes OUT.json, OUT.md, ...: a folder meant there (``results/``) would
    make ``results.json`` beside it. A folder named OUT may exist (``sweep --out r/wise-ft`` suggests
    ``interpolate --out r/wise-ft/alpha0.5.pt``). Fails as :func:`check_output` does for ``OUT + suffix``."""
    text = os.fspath(prefix)
    if text.endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, "is a folder; --out takes the start of file names "
                                f"(OUT{suffix}, ...), e.g. {os.path.join(text, 'results')}", text)
    check_output(text + suffix)
    return Path(text)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: never a half-written file.
    An ``OSError`` (a full disk, a read-only folder) leaves no temporary file and names ``path``."""
    path = Path(path)
    try:
        check_output(path)  # mkdir's "File exists" for a file in the way names neither the file nor the cause
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the rename: a power cut leaves old or new, not empty
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name (a full disk's error from ``write`` names no file)."""
    if e.filename is not None:
        return e
    return OSError(e.errno, e.strerror or str(e), str(path))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    """``obj`` as JSON, ASCII-escaped (keys from undecodable tar member names carry lone surrogates)."""
    write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=True) + "\n")
