"""Which training plugins are announced, and which ``--loss`` a run asks for.

Discovery has one behaviour, the same as the upstream patches' ``open_clip_train/plugins.py``: every
entry point of the group ``open_clip_train.plugins`` is loaded and checked against the plugin
contract (:mod:`openclip_ce.contract`); one that fails to import, breaks the contract or reuses a
taken ``--loss`` name is left out with one warning line, and plain training goes on. Asking for a
left-out plugin with ``--loss NAME`` is then an error that says why it was left out.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Dict, Optional, Sequence

from ..contract import LOSS_DEFAULT, contract_problems

PLUGIN_GROUP = "open_clip_train.plugins"


def upstream_has_plugin_lookup() -> bool:
    """True when open_clip itself looks plugins up (``patches/`` applied): then the bootstrap stands aside."""
    return importlib.util.find_spec("open_clip_train.plugins") is not None


@dataclass
class Discovered:
    plugins: Dict[str, Any] = field(default_factory=dict)   # --loss name -> plugin object
    left_out: Dict[str, str] = field(default_factory=dict)  # --loss name (or entry point) -> why


def discover_plugins(entry_points: Optional[Sequence[Any]] = None, warn=None,
                     builtin: Sequence[Any] = ()) -> Discovered:
    """Load and check the announced plugins (see module docstring); ``warn(msg)`` reports each left out.

    ``builtin``: plugin objects to use when no entry point announces their name (a source tree run
    with ``python -m openclip_ce.train`` before ``pip install``); checked against the contract too."""
    warn = warn or (lambda msg: print(f"openclip-ce: warning: {msg}", file=sys.stderr))
    eps = list(metadata.entry_points(group=PLUGIN_GROUP) if entry_points is None else entry_points)
    found = Discovered()
    for ep in sorted(eps, key=lambda e: (e.name, e.value)):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break plain training
            found.left_out[ep.name] = f"entry point {ep.value!r} failed to load ({type(e).__name__}: {e})"
            warn(f"training plugin {ep.name!r} left out: {found.left_out[ep.name]}")
            continue
        name = getattr(obj, "name", ep.name)
        problems = contract_problems(obj)
        if not problems and name in found.plugins:
            problems = [f"--loss name {name!r} is already taken by another plugin"]
        if problems:
            key = name if isinstance(name, str) else ep.name
            found.left_out[key] = f"entry point {ep.value!r} does not follow the plugin contract: " + "; ".join(problems)
            warn(f"training plugin {key!r} left out: {found.left_out[key]}")
            continue
        found.plugins[name] = obj
    for obj in builtin:
        name = getattr(obj, "name", None)
        if name not in found.plugins and name not in found.left_out and not contract_problems(obj):
            found.plugins[name] = obj
    return found


def requested_loss(argv: Sequence[str]) -> Optional[str]:
    """The value given to ``--loss`` (or an abbreviation open_clip's parser would accept), if any."""
    for i, a in enumerate(argv):
        if a == "--":
            break
        name, eq, value = a.partition("=")
        if name == "--loss" or (len(name) > 2 and "--loss".startswith(name) and name != "--"):
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    return None


def asks_for_plugin(argv: Sequence[str]) -> bool:
    return requested_loss(argv) not in (None, LOSS_DEFAULT)


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)
