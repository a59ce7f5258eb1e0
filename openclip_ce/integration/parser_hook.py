"""Stage 1 of every wiring: open_clip's parser gains ``--loss`` and the selected plugin's flags, and a
parsed run is told apart: a plugin run, a stock run recorded on request, or a stock run left alone.

:func:`install_parser_hook` makes ``open_clip_train.params`` build a :class:`PluginArgumentParser`
and wraps its ``parse_args``: a run whose ``--loss`` selects a plugin is checked by the plugin
(``check_args``) and handed to the installer's ``on_plugin_run`` (stage 2, :mod:`.installer`); a stock
run with ``OPENCLIP_CE_METRICS=1`` to ``on_recorded_run``; a run with ``--device cpu`` gets the CPU
DDP fix (:mod:`.cpu_ddp`). :func:`active_plugin` answers, everywhere later, which plugin a run
selected; :func:`refuse` ends a run before training with one line, as open_clip's parser does.
"""

from __future__ import annotations

import argparse
import functools
import sys
import types
from typing import Any, Callable, Optional

from ..contract import LOSS_DEFAULT
from ..errors import EXIT_USAGE
from .cpu_ddp import install_cpu_ddp_fix
from .discovery import PLUGIN_GROUP, Discovered, wants_help
from .patching import main_modules
from .switch import metrics_requested

_found = Discovered()
_parser_hooked = False


def active_plugin(args) -> Optional[Any]:
    name = getattr(args, "loss", LOSS_DEFAULT)
    return None if name == LOSS_DEFAULT else _found.plugins[name]


def refuse(message: str) -> None:
    """End the run before training with one line, as open_clip's parser does (all ranks decide alike)."""
    print(f"open_clip_train: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _loss_value(value: str) -> str:
    if value in _found.left_out:
        raise argparse.ArgumentTypeError(f"training plugin {value!r} is not available: {_found.left_out[value]}")
    return value


def add_loss_argument(parser: argparse.ArgumentParser) -> None:
    plugins = _found.plugins
    parser.add_argument(
        "--loss", default=LOSS_DEFAULT, type=_loss_value, choices=[LOSS_DEFAULT, *plugins],
        help=f"training objective: '{LOSS_DEFAULT}' = open_clip's own (CLIP / CoCa / SigLIP / distill as selected "
             f"by the other flags); others come from installed plugins ({PLUGIN_GROUP} entry points): "
             + "; ".join(f"{n}: {getattr(p, 'description', '')}" for n, p in plugins.items()),
    )


class PluginArgumentParser(argparse.ArgumentParser):
    """open_clip's parser plus ``--loss`` and the selected plugin's flags, added just before parsing.

    A run that selects no plugin gets ``--loss`` only, so its namespace (and ``params.txt``) is
    stock open_clip's plus ``loss: clip``. ``--help`` lists every plugin's flags."""

    def parse_known_args(self, args=None, namespace=None):
        if not getattr(self, "_plugin_args_added", False):
            self._plugin_args_added = True
            add_loss_argument(self)
            argv = list(sys.argv[1:] if args is None else args)
            probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            add_loss_argument(probe)
            selected, _ = probe.parse_known_args(argv)
            for name, plugin in _found.plugins.items():
                if name == selected.loss or wants_help(argv):
                    plugin.add_arguments(self)
        return super().parse_known_args(args, namespace)


def _argparse_proxy() -> types.ModuleType:
    proxy = types.ModuleType("argparse")
    proxy.__dict__.update({k: v for k, v in vars(argparse).items() if not k.startswith("__")})
    proxy.ArgumentParser = PluginArgumentParser
    return proxy


def _wrap_parse_args(original, on_plugin_run: Callable[[Any, Any], None], on_recorded_run: Callable[[Any], None]):
    @functools.wraps(original)
    def parse_args(args):
        parsed = original(args)
        plugin = active_plugin(parsed)
        if plugin is not None:
            try:
                plugin.check_args(parsed)
            except ValueError as e:
                refuse(str(e))
            on_plugin_run(parsed, plugin)
        elif metrics_requested():
            on_recorded_run(parsed)
        if str(getattr(parsed, "device", "")).startswith("cpu"):
            install_cpu_ddp_fix()
        return parsed

    return parse_args


def install_parser_hook(found: Discovered, on_plugin_run: Callable[[Any, Any], None],
                        on_recorded_run: Callable[[Any], None]) -> None:
    """``open_clip_train.params`` builds :class:`PluginArgumentParser`; after parsing, a run that selects
    a plugin is checked and handed to ``on_plugin_run(args, plugin)``, a stock run with
    ``OPENCLIP_CE_METRICS=1`` to ``on_recorded_run(args)``. Idempotent; call before
    ``open_clip_train.main`` runs ``main``."""
    global _parser_hooked, _found
    _found = found
    if _parser_hooked:
        return
    import open_clip_train.params as oc_params

    oc_params.argparse = _argparse_proxy()
    oc_params.parse_args = _wrap_parse_args(oc_params.parse_args, on_plugin_run, on_recorded_run)
    for main in main_modules():  # main imported before the hook
        main.parse_args = oc_params.parse_args
    _parser_hooked = True


def parser_hook_installed() -> bool:
    return _parser_hooked
