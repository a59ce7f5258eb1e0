"""Logging configuration: done once per process, by the ``openclip-ce`` command (and by the worker
processes it spawns, which start with none). Library modules only create loggers."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``. A process whose root logger already has handlers (open_clip's main
    configures its own) keeps them; only our loggers' level is set."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger("openclip_ce").setLevel(level)
