"""Import hook installed by ``openclip_ce_bootstrap.pth`` in every interpreter of the environment.

It costs one ``sys.meta_path`` entry whose ``find_spec`` compares a string: nothing is imported
until the import system looks up ``open_clip_train.main`` (``python -m open_clip_train.main``,
``torchrun -m open_clip_train.main``, each worker being a fresh interpreter, or a plain import).
At that moment it calls :func:`openclip_ce.integration.activate.activate` with the process's
command line and then lets the normal import proceed. A run that does not select a plugin loss
stays stock open_clip (see :mod:`openclip_ce.integration.versions`).

``OPENCLIP_CE_DISABLE=1`` turns it off (:mod:`.switch`). When open_clip has its own plugin lookup
(``patches/`` applied) the wiring stands aside. This module and its package import nothing heavy.
"""

import sys

from .switch import disabled

TARGET = "open_clip_train.main"


class OpenClipPluginFinder:
    """A meta-path finder that never finds anything; it only reacts to the lookup of TARGET."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]  # react once
        if not disabled():
            from openclip_ce.integration.activate import activate_or_exit

            activate_or_exit(sys.argv[1:], "open_clip_train")
        return None

    def invalidate_caches(self):
        pass


def install() -> None:
    """Called from the .pth file: register the finder (once), unless disabled."""
    if disabled() or any(isinstance(f, OpenClipPluginFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, OpenClipPluginFinder())
