"""matplotlib, headless, and figures written atomically (a reader never sees half a PNG)."""

from __future__ import annotations

import io
import os

from .fileio import write_atomic


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> str:
    """Write ``fig`` as PNG to ``path`` atomically and close it; returns ``str(path)``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    write_atomic(path, buf.getvalue())
    return str(path)
