"""The ``openclip-ce`` command.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand is used, so
``openclip-ce --help`` stays fast and one broken optional dependency does not break the rest.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# name -> (module, one-line help)
SUBCOMMANDS = {
    "demo": ("openclip_ce.demo", "tiny end-to-end CE-CLIP training on shards it writes itself (no downloads)"),
    "make-shards": ("openclip_ce.make_shards", "write hard negatives (neg.json) next to every caption of WebDataset shards"),
    "eval": ("openclip_ce.evaluate", "compositional benchmarks + zero-shot retention for an open_clip model"),
    "compare": ("openclip_ce.compare", "table and chart comparing `openclip-ce eval` result files"),
    "analyze": ("openclip_ce.analyze", "intra-modal similarity / cross-modal gap analysis with bootstrap CIs (paper Fig. 8)"),
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
    p.add_argument("--version", action="version", version=f"%(prog)s {__import__('openclip_ce').__version__}")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return 2  # unreachable: argparse exits
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    if hasattr(module, "cli_main"):  # commands that own their whole argv (e.g. `train`)
        return int(module.cli_main(rest) or 0)
    parser = argparse.ArgumentParser(prog=f"openclip-ce {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
