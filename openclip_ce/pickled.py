"""Shard members that webdataset's default decoders would unpickle.

open_clip's webdataset pipeline decodes every member of a sample with webdataset's default decoders
(``wds.decode``), also members it then throws away: ``.pyd`` and ``.pickle`` go through
``pickle.loads`` and ``.pth`` through ``torch.load`` (``.gz`` is taken off first, so ``x.pyd.gz`` is
unpickled too). Unpickling data can run any code the data names, so a downloaded shard with such a
member runs code in every data worker. The training data stage of a plugin run drops them before the
decoder sees them; ``make-shards`` copies them through (it never decodes them) and counts them.
"""

from __future__ import annotations

from typing import Optional

# webdataset.autodecode.decoders entries that unpickle (checked against the installed webdataset by
# tests/shards/test_faults.py, so a new one there fails the suite)
PICKLED_EXTENSIONS = frozenset({"pyd", "pickle", "pth"})


def decoded_extension(ext: str) -> str:
    """The extension webdataset's decoder dispatches on: the last one, after any ``.gz`` is taken off."""
    ext = ext.lower()
    while ext.endswith(".gz") or ext == "gz":
        ext = ext[:-3].rstrip(".") if ext != "gz" else ""
    return ext.rsplit(".", 1)[-1]


def is_pickled(ext: Optional[str]) -> bool:
    """Would webdataset's default decoders unpickle the sample member with this extension?"""
    return ext is not None and decoded_extension(ext) in PICKLED_EXTENSIONS
