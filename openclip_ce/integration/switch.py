"""The environment switches of the import hook: ``OPENCLIP_CE_DISABLE=1`` (off) and
``OPENCLIP_CE_METRICS=1`` (record a stock run's loss scalars). A leaf module (imports ``os`` only):
the bootstrap, the wirings and ``openclip-ce train`` all read them from here."""

import os

DISABLE_ENV = "OPENCLIP_CE_DISABLE"


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


METRICS_ENV = "OPENCLIP_CE_METRICS"


def metrics_requested() -> bool:
    """``OPENCLIP_CE_METRICS=1``: a run without a plugin loss records open_clip's loss scalars in
    ``train_metrics.jsonl`` too (a ``--loss ce_clip`` run always does)."""
    return os.environ.get(METRICS_ENV, "").strip().lower() not in ("", "0", "false", "no")
