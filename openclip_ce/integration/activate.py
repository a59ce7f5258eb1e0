"""Turn the plugins on for one ``open_clip_train.main`` run: version table, discovery, parser hook.

Called by the bootstrap when ``open_clip_train.main`` is imported, and by ``openclip-ce train``.
The installed open_clip picks its wiring from :data:`.versions.WIRINGS`; the installer
(:mod:`.installer`) hooks the parser with that wiring's ``WIRING``. On an open_clip no row
covers, a run that does not ask for a plugin loss goes on untouched after one warning line; a run
that asks for one is refused before anything is patched.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Optional, Sequence

from ..errors import EXIT_USAGE, UserError
from .discovery import asks_for_plugin, discover_plugins, requested_loss, upstream_has_plugin_lookup
from . import installer, versions


class UnsupportedOpenClipVersion(UserError):
    pass


_active: Optional[bool] = None  # the decision, once per process (the bootstrap and `openclip-ce train` both ask)


def activate(argv: Sequence[str], builtin: Sequence[Any] = ()) -> bool:
    """Wire the plugins for a run with command line ``argv``; False when standing aside.

    ``builtin``: plugin objects to use when no entry point announces them (see
    :func:`.discovery.discover_plugins`). Raises :class:`UnsupportedOpenClipVersion` when ``argv``
    asks for a plugin loss on an open_clip that no wiring supports."""
    global _active
    if _active is not None:
        return _active
    if upstream_has_plugin_lookup():
        _active = False  # open_clip looks plugins up itself (patches/ applied)
        return _active
    version = versions.openclip_version()
    wiring = versions.wiring_for(version)
    if wiring is None:
        if asks_for_plugin(argv):
            raise UnsupportedOpenClipVersion(f"--loss {requested_loss(argv)}: {versions.unsupported_message(version)}")
        print(f"openclip-ce: warning: {versions.unsupported_message(version)}; training plugins are off for this run",
              file=sys.stderr)
        _active = False
        return _active
    installer.install_parser_hook(importlib.import_module(wiring.module).WIRING, discover_plugins(builtin=builtin))
    _active = True
    return _active


def activate_or_exit(argv: Sequence[str], prog: str, builtin: Sequence[Any] = ()) -> bool:
    """:func:`activate`, turning a refusal into one line on stderr and exit code 2."""
    try:
        return activate(argv, builtin)
    except UnsupportedOpenClipVersion as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
