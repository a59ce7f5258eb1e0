"""The ``openclip-ce`` command.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand is used, so
``openclip-ce --help`` stays fast and one broken optional dependency does not break the rest.

This is the one place that configures logging (``--log-level``) and turns a
:class:`~openclip_ce.errors.UserError` into one line, ``openclip-ce COMMAND: error: ...``, and exit
code 2 (``--debug``: the traceback follows the line); Ctrl-C is one line too, exit code 130 (a command's
``INTERRUPTED`` text says what is kept).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UserError
from .logconfig import LEVELS, configure_logging

# name -> (module, one-line help)
SUBCOMMANDS = {
    "demo": ("openclip_ce.demo.command", "the whole pipeline on toy data: shards, negatives, CLIP vs CE-CLIP (--siglip: SigLIP vs CE-SigLIP), eval"),
    "make-shards": ("openclip_ce.shards.command", "write hard negatives (neg.json) next to every caption of WebDataset shards"),
    "eval": ("openclip_ce.evaluate.command", "compositional benchmarks + zero-shot retention for an open_clip model"),
    "compare": ("openclip_ce.evaluate.compare", "table and chart comparing `openclip-ce eval` result files"),
    "interpolate": ("openclip_ce.wiseft.interpolate", "WiSE-FT: write (1 - a) * base + a * fine-tuned weights as a checkpoint"),
    "sweep": ("openclip_ce.wiseft.sweep", "evaluate a series of interpolation alphas; zero-shot vs compositional trade-off"),
    "analyze": ("openclip_ce.evaluate.analyze", "intra-modal similarity / cross-modal gap analysis with bootstrap CIs (paper Fig. 8)"),
    "train": ("openclip_ce.train", "run open_clip_train.main with the CE-CLIP plugin loaded explicitly"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openclip-ce",
        description="CE-CLIP hard-negative training for OpenCLIP. Run `openclip-ce COMMAND --help` for a command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<12} {v[1]}" for k, v in SUBCOMMANDS.items()),
    )
    p.add_argument("command", choices=list(SUBCOMMANDS), metavar="COMMAND")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return EXIT_USAGE  # unreachable: argparse exits
    name, rest = argv[0], argv[1:]
    prog = f"openclip-ce {name}"
    module = importlib.import_module(SUBCOMMANDS[name][0])
    if hasattr(module, "cli_main"):  # commands that own their whole argv (`train`: open_clip's parser)
        return int(module.cli_main(rest) or 0)
    parser = argparse.ArgumentParser(prog=prog, description=SUBCOMMANDS[name][1])
    module.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=LEVELS, help="log messages at this level and above")
    parser.add_argument("--debug", action="store_true",
                        help="errors end with their traceback too (default: one line naming the file or sample)")
    args = parser.parse_args(rest)
    configure_logging(args.log_level)
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        if args.debug:
            raise
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted{getattr(module, 'INTERRUPTED', '')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if e.filename is None or args.debug:  # not about a path the user gave: a real failure, with its traceback
            raise
        # a path that cannot be read or written (--out in a read-only or missing place, a full disk, ...)
        print(f"{prog}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
