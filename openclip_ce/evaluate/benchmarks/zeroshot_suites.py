"""Named zero-shot suites for ``--zeroshot-datasets``: one name for the list of classification tasks whose
mean accuracy papers quote.

* ``elevater21``: the 21 zero-shot classification tasks that vl_compo (Oh et al. 2024) and FSC-CLIP
  (Oh et al., EMNLP 2024) average over ("21 zero-shot classification tasks": ELEVATER's 20 image
  classification datasets and ImageNet-1k; vl_compo's ``results.csv`` column ``21_tasks_avg``), the
  benchmark CE-CLIP's Table 5 reports as "ELEVATER". Each task is read through clip_benchmark's loader,
  class names and templates for it (not ELEVATER's toolkit: its prompts and splits differ, so the
  average is comparable across openclip-ce runs and close to, not equal to, the papers'). Hateful
  Memes has no clip_benchmark loader: it is read as ``folder:hateful_memes`` (an ImageFolder of the
  test images with a ``classnames.txt``, OpenAI's ImageNet templates).
* ``vtab``, ``vtab+``, ``imagenet_robustness``: clip_benchmark's own dataset collections
  (``clip_benchmark.datasets.builder.dataset_collection``, read from the installed package), minus the
  multi-label VOC 2007 variant, which has no top-1 accuracy. ``vtab+`` (35 tasks then) is the list of
  clip_benchmark's published benchmark (``benchmark/benchmark.csv``).

Each task names the clip_benchmark datasets that can provide it, in order of preference (e.g.
``vtab/caltech101``, ``wds/vtab/caltech101``, ``caltech101``); the first whose directory exists under
``DATA_ROOT/zeroshot/`` is used and recorded. The suite's ``<suite>/avg`` is the mean top-1 accuracy
over its tasks, written only when every task was evaluated (as SugarCrepe's ``avg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ELEVATER21: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("imagenet1k", ("imagenet1k", "wds/imagenet1k")),
    ("caltech101", ("vtab/caltech101", "wds/vtab/caltech101", "caltech101")),
    ("cifar10", ("cifar10", "vtab/cifar10", "wds/vtab/cifar10")),
    ("cifar100", ("cifar100", "vtab/cifar100", "wds/vtab/cifar100")),
    ("country211", ("country211", "wds/country211")),
    ("dtd", ("dtd", "vtab/dtd", "wds/vtab/dtd")),
    ("eurosat", ("eurosat", "vtab/eurosat", "wds/vtab/eurosat")),
    ("fer2013", ("fer2013", "wds/fer2013")),
    ("fgvc_aircraft", ("fgvc_aircraft", "wds/fgvc_aircraft")),
    ("flowers", ("flowers", "vtab/flowers", "wds/vtab/flowers")),
    ("food101", ("food101", "wds/food101")),
    ("gtsrb", ("gtsrb", "wds/gtsrb")),
    ("hateful_memes", ("folder:hateful_memes",)),
    ("kitti_distance", ("vtab/kitti_closest_vehicle_distance", "wds/vtab/kitti_closest_vehicle_distance")),
    ("mnist", ("mnist", "wds/mnist")),
    ("pets", ("pets", "vtab/pets", "wds/vtab/pets")),
    ("pcam", ("pcam", "vtab/pcam", "wds/vtab/pcam")),
    ("renderedsst2", ("renderedsst2", "wds/renderedsst2")),
    ("resisc45", ("vtab/resisc45", "wds/vtab/resisc45")),
    ("cars", ("cars", "wds/cars")),
    ("voc2007", ("voc2007", "wds/voc2007")),
)

CLIP_BENCHMARK_COLLECTIONS = ("vtab", "vtab+", "imagenet_robustness")
MULTILABEL = ("voc2007_multilabel",)


def clip_benchmark_collection(name: str) -> Optional[Tuple[Tuple[str, Tuple[str, ...]], ...]]:
    """The tasks of clip_benchmark's collection ``name`` (each readable as itself or its ``wds/`` copy);
    None when clip_benchmark is not installed."""
    try:
        from clip_benchmark.datasets.builder import dataset_collection
    except ImportError:
        return None
    return tuple((d, (d, f"wds/{d}")) for d in dataset_collection[name] if d not in MULTILABEL)


def suite_names() -> List[str]:
    return ["elevater21", *CLIP_BENCHMARK_COLLECTIONS]


def suite_tasks(name: str) -> Optional[Tuple[Tuple[str, Tuple[str, ...]], ...]]:
    """``((task, candidate dataset names), ...)`` of suite ``name``, or None when ``name`` is no suite."""
    if name == "elevater21":
        return ELEVATER21
    if name in CLIP_BENCHMARK_COLLECTIONS:
        return clip_benchmark_collection(name) or ()
    return None


def dataset_dir(base: Path, name: str) -> Path:
    return base / (name[len("folder:"):] if name.startswith("folder:") else name)


def plan(specs: Sequence[str]) -> Tuple[List[Tuple[str, Tuple[str, ...]]], Dict[str, List[str]]]:
    """``--zeroshot-datasets`` items -> the runs ``[(label, candidates)]`` (a dataset given twice, or by a
    suite and by name, runs once) and the suites ``{suite: [task labels]}``.

    A plain name runs as itself under its own label (``folder:NAME`` under ``NAME``); a suite adds its tasks."""
    runs: Dict[str, Tuple[str, ...]] = {}
    suites: Dict[str, List[str]] = {}
    for spec in specs:
        tasks = suite_tasks(spec)
        if tasks is None:
            label = spec[len("folder:"):] if spec.startswith("folder:") else spec
            runs.setdefault(label, (spec,))
            continue
        suites[spec] = [t for t, _ in tasks]
        for task, candidates in tasks:
            runs.setdefault(task, candidates)
    return list(runs.items()), suites


def resolve(base: Path, candidates: Sequence[str]) -> Optional[str]:
    """The first candidate whose directory exists under ``base``."""
    return next((c for c in candidates if dataset_dir(base, c).is_dir()), None)


def missing_note(base: Path, candidates: Sequence[str]) -> str:
    dirs = [str(dataset_dir(base, c)) for c in candidates]
    return f"expected the dataset directory {dirs[0]}" if len(dirs) == 1 else \
        f"expected one of the dataset directories {', '.join(dirs)}"
