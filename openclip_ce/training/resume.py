"""``--resume latest`` in a plugin run: the checkpoint open_clip will resume from, checked before the run starts.

open_clip resolves ``--resume latest`` to the last ``*.pt`` under ``<logs>/<name>/checkpoints`` in natural
order (``epoch_latest.pt`` with ``--save-most-recent``) and loads it: a file cut short (a job killed while
``torch.save`` wrote it, a full disk) stops the run with a ``PytorchStreamReader`` traceback, and every
restart of the job does the same. torch writes a checkpoint as a zip archive whose directory comes last, so
a file cut short has no directory: reading that directory (the file's last bytes, no tensor) tells a whole
checkpoint from a damaged one. A damaged latest checkpoint is refused in one line naming it and the newest
whole checkpoint to resume from instead. Nothing is loaded twice, nothing is changed on disk, and a stock
open_clip run (no plugin loss) is not affected.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import zipfile
from typing import List, Optional

LATEST_CHECKPOINT_NAME = "epoch_latest.pt"  # open_clip's --save-most-recent file


def _natural_key(text: str) -> list:
    """open_clip's order of checkpoint paths (``epoch_10`` after ``epoch_9``)."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text.lower())]


def checkpoints_newest_first(checkpoint_dir: str) -> List[str]:
    """The ``*.pt`` files open_clip's ``get_latest_checkpoint`` chooses among, the one it picks first."""
    found = glob.glob(checkpoint_dir + "**/*.pt", recursive=True)  # open_clip's own pattern
    return sorted((p for p in found if os.path.isfile(p)), key=_natural_key, reverse=True)


def damage(path: str) -> Optional[str]:
    """Why ``path`` cannot be a whole torch checkpoint (None: it looks whole). Reads the zip directory only."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "an empty file"
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":  # torch's legacy (pre-zip) format: a pickle stream, nothing cheap to check
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as e:
        return f"not a complete zip archive, as a file cut short while written ({e}; {size} bytes)"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "a zip archive without torch's data.pkl"
    return None


def check_resume_latest(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` (one line) when ``--resume latest`` would resume from a damaged checkpoint."""
    if getattr(args, "resume", None) != "latest" or getattr(args, "remote_sync", None):
        return
    logs, name = getattr(args, "logs", None), getattr(args, "name", None)
    if not logs or str(logs).lower() == "none" or not name:  # open_clip names such a run itself: nothing to resume
        return
    checkpoint_dir = os.path.join(str(logs), str(name), "checkpoints")
    candidates = checkpoints_newest_first(checkpoint_dir)
    if getattr(args, "save_most_recent", False):
        latest = os.path.join(checkpoint_dir, LATEST_CHECKPOINT_NAME)
        if not os.path.isfile(latest):
            return
    elif candidates:
        latest = candidates[0]
    else:
        return
    why = damage(latest)
    if why is None:
        return
    whole = next((p for p in candidates if p != latest and damage(p) is None), None)
    # open_clip refuses an explicit --resume PATH into an existing run folder ("Experiment already exists"):
    # the way back is to move the damaged file aside, so that --resume latest picks the newest whole one
    aside = f"mv {latest} {latest}.damaged"
    then = (f"the newest whole checkpoint is {whole}: move the damaged file aside ({aside}) and run again with "
            f"--resume latest, which then resumes from it" if whole else
            f"no other checkpoint in {checkpoint_dir} is whole: move it aside ({aside}) and start the run again")
    raise ValueError(
        f"--resume latest: {latest}, the checkpoint open_clip would resume from, is damaged ({why}); {then}")
