"""How the wiring changes open_clip from outside, in two ways: a module attribute swapped for a while
(:func:`swapped`), and the names of ``open_clip_train.main`` replaced, since ``main()`` looks them up in
its module when it calls them (:func:`main_modules`: the module or modules where to replace them)."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def swapped(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def main_modules():
    """The loaded ``open_clip_train.main`` module(s): imported by name, or running as ``__main__`` (``python -m``)."""
    seen = []
    for mod in (sys.modules.get("__main__"), sys.modules.get("open_clip_train.main")):
        spec = getattr(mod, "__spec__", None)
        if mod is not None and getattr(spec, "name", None) == "open_clip_train.main" and mod not in seen:
            seen.append(mod)
    return seen
