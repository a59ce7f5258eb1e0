"""The demo's stages run the product's real entry points, each in its own process, as a user would type them.

Each stage's full output goes to a log file under ``OUT/logs/``; the terminal gets one progress line
per stage (updated in place on a terminal), and on failure the stage's name, its log and the last
lines of that log.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import UserError

_TRAIN = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+) .*?Loss: ([0-9.e+-]+)")


class Console:
    """One line per stage on stderr: rewritten in place on a terminal, printed once per change otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = ""

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        self._last = text

    def done(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last = ""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def python_cmd(*args: str) -> List[str]:
    return [sys.executable, *args]


def run_stage(console: Console, title: str, cmd: Sequence[str], log: Path,
              progress: Optional[Callable[[], Optional[str]]] = None, env: Optional[dict] = None) -> float:
    """Run ``cmd`` with its output in ``log``; show ``title`` (and ``progress()`` while it runs). Returns seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    console.update(f"{title} ...")
    with open(log, "w", encoding="utf-8") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        # its own process group, so that an interrupted demo stops the stage and everything it started
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                note = progress() if progress else None
                console.update(f"{title} ... {note or ''} [{time.monotonic() - t0:.0f} s]")
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        console.done(f"{title}: FAILED (exit {proc.returncode}) after {seconds:.0f} s")
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        sys.stderr.write("\n".join("    " + line for line in tail) + "\n")
        raise UserError(f"demo stage '{title}' failed (exit {proc.returncode}); its full log: {log}")
    console.done(f"{title}: done in {seconds:.0f} s")
    return seconds


def training_progress(out_log: Path, epochs: int) -> Callable[[], Optional[str]]:
    """Reads open_clip's ``out.log`` for its last ``Train Epoch`` line: share of the run done, and the loss."""

    def note() -> Optional[str]:
        if not out_log.exists():
            return "starting"
        last = None
        with open(out_log, encoding="utf-8", errors="replace") as f:
            for line in f:
                last = _TRAIN.search(line) or last
        if last is None:
            return "building the model"
        epoch, seen, per_epoch, loss = int(last.group(1)), int(last.group(2)), int(last.group(3)), last.group(4)
        done = (epoch + seen / max(1, per_epoch)) / max(1, epochs)
        return f"{100 * done:.0f}% of {epochs} epochs, loss {float(loss):.3f}"

    return note
