"""Which open_clip this package supports, and through which wiring: the one table.

Each row maps a range of open_clip versions to the module that wires the training plugins into that
version's ``open_clip_train.main`` (the bootstrap and ``openclip-ce train`` pick the row at start-up),
and says what a ``--loss`` plugin run gets there (the README's "supported open_clip versions" table
is this table). Every wiring module states what differs in its version as a ``WIRING``
(:class:`.installer.Wiring`), and lists the open_clip names, signatures and formats the wiring relies
on (its ``REQUIRES``, checked by :mod:`.requires`); ``tests/integration/test_wiring_requirements.py`` checks each
list against the open_clip it was written for, so an upgrade fails one clear test instead of a run.

The version is the one of the open_clip that ``import open_clip`` loads (its ``version.py``), not the
installed distribution's metadata: a source checkout on ``PYTHONPATH`` wins over an installed wheel.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Optional, Tuple

from .switch import DISABLE_ENV

_VERSION_LINE = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.M)


@dataclass(frozen=True)
class VersionRow:
    module: str                      # the wiring module, with its WIRING (imported only when its row is chosen)
    versions: str                    # the range, for people
    low: Tuple[int, int]             # (major, minor), inclusive
    high: Tuple[int, int]            # (major, minor), exclusive
    tested_on: str
    gives: str

    def matches(self, version: str) -> bool:
        mm = major_minor(version)
        return mm is not None and self.low <= mm < self.high


WIRINGS: Tuple[VersionRow, ...] = (
    VersionRow(
        module="openclip_ce.integration.openclip33", versions="3.3.x", low=(3, 3), high=(3, 4),
        tested_on="open_clip_torch 3.3.0 (PyPI)",
        gives="everything: webdataset, csv and synthetic data; DDP (CPU too), --accum-freq, AMP, "
              "--grad-checkpointing, --torchcompile; thresholds kept across --resume (a state file next to "
              "the checkpoints); the metrics in the log line, TensorBoard, W&B and train_metrics.jsonl; "
              "the no-negatives guard; packed text batches where exact",
    ),
    VersionRow(
        module="openclip_ce.integration.openclip4", versions="4.x from 4.2.0.dev0 (main)", low=(4, 2), high=(5, 0),
        tested_on="open_clip main @ 89fb801 (4.2.0.dev0)",
        gives="the same through main's task machinery (the CE loss inside a CLIPTask / SigLIPTask, the text "
              "batch under the dict batch's 'text' key); also W&B's stand-in trackio. Refused with --loss "
              "ce_clip: --use-naflex, variable-length text towers (so --length-bucketing), --json-text-key, "
              "--fsdp",
    ),
)


def major_minor(version: str) -> Optional[Tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def openclip_version() -> str:
    """The version of the open_clip that ``import open_clip`` would load (nothing is imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin:
        try:
            with open(os.path.join(os.path.dirname(spec.origin), "version.py"), encoding="utf-8") as f:
                m = _VERSION_LINE.search(f.read())
            if m:
                return m.group(1)
        except OSError:
            pass
    try:
        return metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def wiring_for(version: str) -> Optional[VersionRow]:
    return next((w for w in WIRINGS if w.matches(version)), None)


def supported_text() -> str:
    return " and ".join(w.versions for w in WIRINGS)


def _our_version() -> str:
    try:
        return metadata.version("openclip-ce")
    except metadata.PackageNotFoundError:
        return "(source tree)"


def unsupported_message(version: str) -> str:
    return (f"openclip-ce {_our_version()} supports open_clip_torch {supported_text()}, but open_clip_torch "
            f"{version} is installed; install a supported release (pip install 'open_clip_torch[training]==3.3.*') "
            f"or set {DISABLE_ENV}=1 to train without plugins")
