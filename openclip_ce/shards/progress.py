"""Progress of a make-shards run: a tqdm bar on a terminal, a log line every ``--log-every`` seconds otherwise."""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """tqdm bar (captions/s, shards done) on a terminal; periodic log lines otherwise."""

    def __init__(self, total: int, tty: bool, log_every: float):
        self.total, self.done, self.failed, self.captions = total, 0, 0, 0
        self.t0 = self._last = time.monotonic()
        self.log_every = log_every
        self.bar = None
        if tty:
            self.bar = tqdm(total=total, unit="shard", desc="make-shards", dynamic_ncols=True)

    def _rate(self) -> float:
        return self.captions / max(time.monotonic() - self.t0, 1e-9)

    def add_captions(self, n: int) -> None:
        self.captions += n
        self._tick()

    def shard_done(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self.bar is not None:
            self.bar.update(1)
        self._tick(force=self.done == self.total)

    def _tick(self, force: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix(captions=self.captions, captions_s=f"{self._rate():.0f}", failed=self.failed,
                                 refresh=False)
            return
        now = time.monotonic()
        if force or now - self._last >= self.log_every:
            self._last = now
            log.info("%d/%d shards done (%d failed), %d captions, %.0f captions/s",
                     self.done, self.total, self.failed, self.captions, self._rate())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
