"""The benchmark registry: every module of :mod:`openclip_ce.evaluate.benchmarks` that defines ``BENCHMARK``.

A benchmark is one file. Its :class:`Benchmark` record owns everything about it: the reader
(``evaluate(root, scorer, opts) -> {"summary": {...}, ...}``), its command-line options and their
defaults, the protocol text written into every results JSON, the headline metrics the charts show,
the chance level of its metrics and the ``--image-root`` names it understands. ``eval``,
``compare`` and the protocol record read them from here; nothing else lists benchmarks.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Benchmark:
    name: str                                           # CLI / results name ("vl-checklist")
    order: int                                          # position in tables and charts
    evaluate: Callable[[Path, Any, Any], Dict]          # (data root, scorer, EvalOptions) -> results
    title: str = ""                                     # paper and what it measures, one line
    headline: Tuple[str, ...] = ()                      # summary keys (fnmatch patterns) charts show
    image_roots: Tuple[str, ...] = ()                   # --image-root NAME=DIR names
    defaults: Mapping[str, Any] = field(default_factory=dict)           # options and their defaults
    add_arguments: Optional[Callable[[argparse._ArgumentGroup], None]] = None
    options: Optional[Callable[[argparse.Namespace], Dict[str, Any]]] = None  # parsed flags -> options
    protocol: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None     # options -> protocol record
    chance: Tuple[Tuple[str, float], ...] = ()          # (summary-key pattern, chance accuracy)

    def settings(self, opts) -> Dict[str, Any]:
        """This benchmark's options: defaults updated with what ``opts`` (an EvalOptions) sets."""
        return {**self.defaults, **(opts.settings.get(self.name) or {})}

    def chance_level(self, metric: str) -> Optional[float]:
        """Chance accuracy of summary metric ``metric`` (without the benchmark prefix), if defined."""
        for pattern, value in self.chance:
            if fnmatch.fnmatchcase(metric, pattern):
                return value
        return None

    def is_headline(self, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, p) for p in self.headline)


@lru_cache(maxsize=None)
def _load() -> Tuple[Benchmark, ...]:
    from . import benchmarks

    found: List[Benchmark] = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        module = importlib.import_module(f"{benchmarks.__name__}.{info.name}")
        bench = getattr(module, "BENCHMARK", None)
        if isinstance(bench, Benchmark):
            found.append(bench)
    names = [b.name for b in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two benchmark modules share a name: {sorted(names)}")
    return tuple(sorted(found, key=lambda b: (b.order, b.name)))


def all_benchmarks() -> Tuple[Benchmark, ...]:
    return _load()


def names() -> List[str]:
    return [b.name for b in _load()]


def get(name: str) -> Benchmark:
    for b in _load():
        if b.name == name:
            return b
    raise KeyError(name)


def find(name: str) -> Optional[Benchmark]:
    try:
        return get(name)
    except KeyError:
        return None


def image_root_names() -> List[str]:
    return [k for b in _load() for k in b.image_roots]


# --------------------------------------------------------------------------- --benchmarks presets

ALL = "all"  # every registered benchmark, whatever modules define them
# fixed lists: what a paper reports, so one flag reruns its evaluation
PRESETS: Dict[str, Tuple[str, ...]] = {
    # CE-CLIP (Zhang et al., CVPR 2024), Tables 1-3 and 5: the benchmarks of references/paper.json
    "ce-clip": ("aro", "valse", "vl-checklist", "sugarcrepe"),
}
PRESET_ALIASES = {"paper": "ce-clip"}  # as `compare --reference paper`


def preset_names() -> List[str]:
    return [ALL, *PRESETS, *PRESET_ALIASES]


def expand(spec: str) -> List[str]:
    """``--benchmarks`` value -> benchmark names, in registry order: comma-separated benchmark names,
    presets (``ce-clip``, alias ``paper``) and ``all``. Unknown names -> ValueError naming them."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    wanted, unknown = set(), []
    for item in items:
        if item == ALL:
            wanted.update(names())
        elif item in PRESETS or item in PRESET_ALIASES:
            wanted.update(PRESETS[PRESET_ALIASES.get(item, item)])
        elif find(item) is not None:
            wanted.add(item)
        else:
            unknown.append(item)
    if unknown or not items:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {','.join(names())} "
                         f"or {','.join(preset_names())}")
    return [n for n in names() if n in wanted]
