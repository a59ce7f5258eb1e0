"""One make-shards run per output directory: an exclusive lock on ``--out/.make-shards/lock``.

Why: a run deletes the partial files of its targets left by dead runs, and rewrites the resume state
(``config.json``; ``done/`` under ``--overwrite``). Two live runs on one ``--out`` would delete each
other's partial files and mix their settings. The lock is an ``flock`` on a file: the kernel drops it
when the process dies however it dies (SIGKILL, OOM, node reboot), so a dead run never leaves a stale
lock behind, and every partial file found while holding the lock belongs to a dead run. The file
records who holds it, for the refusal message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time

from ..errors import UserError
from .plan import state_path

log = logging.getLogger(__name__)


class OutputLock:
    """``with OutputLock(out):`` holds the lock of ``out`` or raises a one-line :class:`UserError`."""

    def __init__(self, out: str):
        self.out = out
        self.path = state_path(out, "lock")
        self._fd = None

    def __enter__(self) -> "OutputLock":
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write to --out {self.out}: {e.strerror} ({e.filename})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"--out {self.out} is in use by another make-shards run{holder}; wait for it "
                                f"to finish or stop it, or choose another --out") from None
            # a filesystem without locks (some parallel filesystems without the flock mount option)
            log.warning("cannot lock %s (%s): make sure no other make-shards run uses this --out",
                        self.path, e.strerror)
            return self
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:  # a full disk: the lock holds all the same; only a refusal message names no holder
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the file stays (removing it would race a run about to lock it)
            os.close(self._fd)          # closing releases the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f" (pid {info['pid']} on {info['host']}, started {info['started']})"
    except (ValueError, KeyError, OSError):
        return ""
