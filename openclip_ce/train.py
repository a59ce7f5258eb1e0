"""``python -m openclip_ce.train [--] <open_clip_train.main args>``: open_clip's own training main with
the plugins loaded explicitly, for environments that skip ``.pth`` files (``python -S``, some
launchers, zipapps). Works under ``torchrun -m openclip_ce.train -- ...`` as well.

Refuses ``--loss`` plugin values when the plugins cannot be active (``OPENCLIP_CE_DISABLE=1``),
instead of letting open_clip's parser abbreviate ``--loss`` to ``--loss-dist-impl`` and silently
train plain CLIP.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from .bootstrap import DISABLE_ENV, disabled


def requested_loss(argv: List[str]) -> Optional[str]:
    """The value given to ``--loss`` (or any unambiguous abbreviation open_clip would accept), if any."""
    for i, a in enumerate(argv):
        if a == "--":
            break
        name, eq, value = a.partition("=")
        if name == "--loss" or (len(name) > 2 and "--loss".startswith(name) and name != "--"):
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    return None


def cli_main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    loss = requested_loss(argv)
    if disabled():
        if loss not in (None, "clip"):
            print(
                f"openclip-ce train: error: --loss {loss} needs the openclip-ce plugin, but {DISABLE_ENV} is set; "
                f"unset it (open_clip alone would silently read --loss as --loss-dist-impl and train plain CLIP)",
                file=sys.stderr,
            )
            return 2
    else:
        from . import openclip_compat

        try:
            openclip_compat.install()
        except openclip_compat.UnsupportedOpenClipVersion as e:
            print(f"openclip-ce train: error: {e}", file=sys.stderr)
            return 2

    from open_clip_train.main import main as open_clip_main

    rc = open_clip_main(argv)
    return int(rc) if isinstance(rc, int) and rc > 0 else (1 if rc == -1 else 0)


if __name__ == "__main__":
    sys.exit(cli_main())
