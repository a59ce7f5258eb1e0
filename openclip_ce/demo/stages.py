"""The demo's stages run the product's real entry points, each in its own process, as a user would type them.

Each stage's full output goes to a log file under ``OUT/logs/``; the terminal gets one progress line
per stage (updated in place on a terminal), and on failure the stage's name, its log and the last
lines of that log.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import UserError
from ..integration.switch import METRICS_ENV
from ..metrics_file import metrics_path, read_metrics

# every stage's environment: the training stages record their loss in train_metrics.jsonl, the plain
# CLIP baseline too (the plugin run always does), for the progress line and the report
STAGE_ENV = {METRICS_ENV: "1"}


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
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **STAGE_ENV, **(env or {})}, start_new_session=True)
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


def training_progress(run_file: Path, total_samples: int) -> Callable[[], Optional[str]]:
    """The last record of a training run's ``train_metrics.jsonl`` (``run_file``: any file of the run's
    directory, e.g. its ``out.log``): share of the run done, and the loss."""
    path = Path(metrics_path(run_file))

    def note() -> Optional[str]:
        if not path.exists():
            return "building the model" if path.parent.exists() else "starting"
        records = read_metrics(path)
        if not records:
            return "building the model"
        last = records[-1]
        return f"{min(100.0, 100 * last['samples'] / max(1, total_samples)):.0f}% done, loss {last['loss']:.3f}"

    return note
