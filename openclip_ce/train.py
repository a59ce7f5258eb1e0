"""``python -m openclip_ce.train [--] <open_clip_train.main args>`` (also ``openclip-ce train``): open_clip's
own training main with the plugins wired explicitly, for environments that skip ``.pth`` files
(``python -S``, some launchers, zipapps). Works under ``torchrun -m openclip_ce.train -- ...`` too.

Refuses ``--loss`` plugin values when the plugins cannot be active (``OPENCLIP_CE_DISABLE=1``, or an
unsupported open_clip), instead of letting open_clip's parser abbreviate ``--loss`` to
``--loss-dist-impl`` and silently train plain CLIP.

This entry point is also where the CE-CLIP plugin is known without an entry point: a source tree
run before ``pip install`` has no ``open_clip_train.plugins`` metadata, so the plugin object is passed
to the discovery as a built-in (the integration itself never imports :mod:`openclip_ce.training`).
"""

from __future__ import annotations

import sys
from typing import List, Optional

from .errors import EXIT_USAGE
from .integration.activate import activate_or_exit
from .integration.discovery import asks_for_plugin, requested_loss
from .integration.switch import DISABLE_ENV, disabled

PROG = "openclip-ce train"


def cli_main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if disabled():
        if asks_for_plugin(argv):
            print(f"{PROG}: error: --loss {requested_loss(argv)} needs the openclip-ce plugin, but {DISABLE_ENV} is "
                  f"set; unset it (open_clip alone would silently read --loss as --loss-dist-impl and train plain CLIP)",
                  file=sys.stderr)
            return EXIT_USAGE
    else:
        from .training.plugin import plugin

        activate_or_exit(argv, PROG, builtin=[plugin])

    from open_clip_train.main import main as open_clip_main

    rc = open_clip_main(argv)
    return int(rc) if isinstance(rc, int) and rc > 0 else (1 if rc == -1 else 0)


if __name__ == "__main__":
    sys.exit(cli_main())
