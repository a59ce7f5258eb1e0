"""Turn the plugins on for one ``open_clip_train.main`` run: version check, discovery, parser hook.

Called by the bootstrap when ``open_clip_train.main`` is imported, and by ``openclip-ce train``.
On an open_clip release this package was not tested against, a run that does not ask for a plugin
loss goes on untouched after one warning line; a run that asks for one is refused before anything
is patched.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..errors import EXIT_USAGE
from .discovery import (asks_for_plugin, discover_plugins, is_supported, openclip_version, requested_loss,
                        unsupported_message, upstream_has_plugin_lookup, UnsupportedOpenClipVersion)


_active: Optional[bool] = None  # the decision, once per process (the bootstrap and `openclip-ce train` both ask)


def activate(argv: Sequence[str]) -> bool:
    """Wire the plugins for a run with command line ``argv``; False when standing aside.

    Raises :class:`UnsupportedOpenClipVersion` when ``argv`` asks for a plugin loss on an
    unsupported open_clip."""
    global _active
    if _active is not None:
        return _active
    if upstream_has_plugin_lookup():
        _active = False  # open_clip looks plugins up itself (patches/ applied)
        return _active
    version = openclip_version()
    if not is_supported(version):
        if asks_for_plugin(argv):
            raise UnsupportedOpenClipVersion(f"--loss {requested_loss(argv)}: {unsupported_message(version)}")
        print(f"openclip-ce: warning: {unsupported_message(version)}; training plugins are off for this run",
              file=sys.stderr)
        _active = False
        return _active
    from . import openclip33

    openclip33.install_parser_hook(discover_plugins())
    _active = True
    return _active


def activate_or_exit(argv: Sequence[str], prog: str) -> bool:
    """:func:`activate`, turning a refusal into one line on stderr and exit code 2."""
    try:
        return activate(argv)
    except UnsupportedOpenClipVersion as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
