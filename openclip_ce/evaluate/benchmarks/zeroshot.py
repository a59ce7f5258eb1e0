"""Zero-shot classification retention, through ``clip_benchmark`` where it fits.

``--zeroshot-datasets`` names datasets under ``DATA_ROOT/zeroshot/<name>/``:

* a clip_benchmark dataset name (``imagenet1k``, ``cifar10``, ``cifar100``, ``food101``, ``stl10``,
  ``dtd``, ``pets``, ...): ``clip_benchmark.datasets.builder.build_dataset(name, root, split="test",
  download=False)`` builds it from files already there (nothing is downloaded; each name expects
  the layout of its torchvision/clip_benchmark loader, e.g. ``imagenet1k`` wants torchvision's
  ImageNet files, ``imagenet1k-unverified`` a plain ``val/`` ImageFolder), with clip_benchmark's
  class names and prompt templates;
* ``folder:<name>``: any ImageFolder (one sub-directory per class). Class names are read from
  ``classnames.txt`` (one per line, in sorted sub-directory order) or else from the directory names
  (``_`` -> space); templates are clip_benchmark's for ``<name>`` if it has them, else OpenAI's 80
  ImageNet templates from open_clip;
* a suite (``elevater21``, ``vtab``, ``vtab+``, ``imagenet_robustness``; :mod:`.zeroshot_suites`): every
  task of the list whose mean accuracy papers quote, each read from the first of its candidate datasets
  present, and ``<suite>/avg``, the mean top-1 accuracy over the tasks when all of them ran.

Scoring: clip_benchmark's ``zero_shot_classifier`` (mean of normalised prompt embeddings per class)
and ``run_classification``, under ``--precision`` (fp32: no autocast; amp: float16; bf16: bfloat16;
recorded per dataset as ``precision``); top-1, top-5 and mean per-class recall are computed here with the same
definitions, because clip_benchmark 1.6.2's ``accuracy()`` fails under NumPy >= 2. Without clip_benchmark
installed (``--zeroshot-backend builtin``), ``folder:`` datasets use open_clip's own
``build_zero_shot_classifier`` and the same three metrics computed here; named datasets then need
clip_benchmark and are skipped with a note. The JSON records which path produced each number.
"""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import ImageFolder

from ...errors import reason
from ..common import BenchmarkDataError, BenchmarkMissing, EvalOptions, mean, progress
from ..outcomes import Outcomes
from ..registry import Benchmark
from ..scorer import CheckedLoader
from . import zeroshot_suites as suites_mod

log = logging.getLogger(__name__)

NAME = "zeroshot"


def clip_benchmark_version() -> Optional[str]:
    """The installed clip_benchmark's version (an optional dependency: the ``eval`` extra), or None."""
    try:
        return version("clip_benchmark")
    except PackageNotFoundError:
        return None


def folder_classnames(root: Path, classes: Sequence[str]) -> List[str]:
    f = root / "classnames.txt"
    if f.is_file():
        try:
            names = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise BenchmarkDataError(f"{f}: not valid UTF-8 ({reason(e)})") from None
        if len(names) != len(classes):
            raise BenchmarkDataError(f"{f}: {len(names)} class names for {len(classes)} class folders in {root}")
        return names
    return [c.replace("_", " ") for c in classes]


def default_templates(name: str) -> Tuple[list, str]:
    """Prompt templates (format strings with ``{c}``) and where they came from."""
    if clip_benchmark_version():
        import clip_benchmark.datasets.builder as cbb

        with open(os.path.join(os.path.dirname(cbb.__file__), "en_zeroshot_classification_templates.json")) as f:
            table = json.load(f)
        if name in table:
            return list(table[name]), f"clip_benchmark templates for {name!r}"
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES], "open_clip OPENAI_IMAGENET_TEMPLATES"


def builtin_zeroshot(model, tokenizer, loader, classnames, templates, device) -> Tuple[np.ndarray, np.ndarray]:
    """open_clip's classifier builder and the logits: ``(logits, targets)``."""
    import open_clip

    fmt = [(lambda c, t=t: t.format(c=c)) for t in templates]
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, classnames, fmt, device=device)
        logits, targets = [], []
        for images, target in progress(loader, total=len(loader), desc="zeroshot (images)", unit="batch"):
            feats = F.normalize(model.encode_image(images.to(device)).float(), dim=-1)
            logits.append((feats @ classifier.float()).float().cpu())
            targets.append(target)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def per_image_hits(logits: np.ndarray, target: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per image: the true class is the top-1 prediction / among the top 5."""
    order = np.argsort(-logits, axis=1)
    return order[:, 0] == target, (order[:, :5] == target[:, None]).any(axis=1)


def classification_metrics(logits: np.ndarray, target: np.ndarray, num_classes: int) -> Dict[str, float]:
    top1, top5 = per_image_hits(logits, target)
    acc1 = float(top1.mean())
    acc5 = float(top5.mean()) if num_classes >= 5 else float("nan")
    recalls = [float(top1[target == c].mean()) for c in np.unique(target)]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": float(np.mean(recalls))}


def _device_for_clip_benchmark(device: str) -> str:
    """clip_benchmark passes ``device`` to ``torch.autocast`` too, which wants a bare device type."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev.index)
    return dev.type


def evaluate_dataset(name: str, root: Path, scorer, backend: str = "auto") -> Dict:
    """One dataset, with the model, preprocess, tokenizer, batch size and device of ``scorer`` (a ClipScorer).

    ``backend``: "auto" (clip_benchmark when installed), "clip_benchmark" or "builtin"."""
    batch_size, workers, device = scorer.batch_size, scorer.workers, scorer.device
    have_cb = clip_benchmark_version() is not None and backend != "builtin"
    if backend == "clip_benchmark" and clip_benchmark_version() is None:
        raise BenchmarkDataError("--zeroshot-backend clip_benchmark: the clip_benchmark package is not installed")
    is_folder = name.startswith("folder:")
    if is_folder:
        try:
            ds = ImageFolder(str(root), transform=scorer.preprocess)
        except (FileNotFoundError, RuntimeError) as e:
            raise BenchmarkDataError(f"{root}: not an ImageFolder ({e})") from e
        classnames = folder_classnames(root, ds.classes)
        templates, tsource = default_templates(name[len("folder:"):])
        dsource = "torchvision ImageFolder"
    else:
        if not have_cb:
            raise BenchmarkMissing(f"{name}: named datasets are read through clip_benchmark, which is not installed "
                                   f"(pip install clip-benchmark) or disabled by --zeroshot-backend builtin")
        from clip_benchmark.datasets.builder import build_dataset

        try:
            ds = build_dataset(name, root=str(root), transform=scorer.preprocess, split="test", download=False)
        except Exception as e:
            raise BenchmarkDataError(f"{root}: clip_benchmark could not read {name!r} offline "
                                     f"({reason(e)})") from e
        classnames, templates = list(ds.classes), ds.templates
        tsource, dsource = f"clip_benchmark templates for {name!r}", f"clip_benchmark build_dataset({name!r})"
    # an unreadable image stops the run with one line naming the file, also with worker processes
    loader = CheckedLoader(ds, batch_size, workers)
    model = scorer.model.eval()
    # --precision: both paths run under the scorer's autocast (clip_benchmark's own autocast, enabled
    # with amp=True, takes the dtype of the enclosing one, so bf16 stays bf16)
    with scorer.autocast():
        if have_cb:
            from clip_benchmark.metrics import zeroshot_classification as zsc

            # clip_benchmark builds the classifier and the logits; its evaluate()/accuracy() turn a 1-element
            # array into a float in a way NumPy >= 2 rejects, so the three metrics are computed here instead.
            cb_device, amp = _device_for_clip_benchmark(device), scorer.precision != "fp32"
            classifier = zsc.zero_shot_classifier(model, scorer.tokenizer, classnames, templates, cb_device, amp=amp)
            logits, target = zsc.run_classification(model, classifier, loader, cb_device, amp=amp)
            logits, target = logits.float().numpy(), target.numpy()
            backend = (f"clip_benchmark {clip_benchmark_version()} zero_shot_classifier + run_classification "
                       f"(metrics computed by openclip_ce)")
        else:
            logits, target = builtin_zeroshot(model, scorer.tokenizer, loader, classnames, templates, device)
            backend = "openclip_ce builtin (open_clip.build_zero_shot_classifier)"
    metrics = classification_metrics(logits, target, len(classnames))
    top1, top5 = per_image_hits(logits, target)
    return {**{k: float(v) for k, v in metrics.items()}, "n": len(ds), "num_classes": len(classnames),
            "num_templates": len(templates), "templates": tsource, "dataset_reader": dsource, "backend": backend,
            "precision": scorer.precision, "hits": {"acc1": top1, "acc5": top5}}


def evaluate(root: Path, scorer, opts: EvalOptions) -> Dict:
    """Zero-shot needs the model itself, not only similarities: ``scorer`` is a ClipScorer."""
    cfg = BENCHMARK.settings(opts)
    base = root / "zeroshot"
    runs, suites = suites_mod.plan(cfg["datasets"])
    in_suite = {t for tasks in suites.values() for t in tasks}
    results, skipped, labels_of = {}, {}, {}
    for label, candidates in runs:
        name = suites_mod.resolve(base, candidates)
        key = label if label in in_suite else candidates[0]  # skipped: the suite task, or the name asked for
        if name is None:
            skipped[key] = suites_mod.missing_note(base, candidates)
            continue
        if name not in results:
            try:
                results[name] = evaluate_dataset(name, suites_mod.dataset_dir(base, name), scorer, cfg["backend"])
            except BenchmarkMissing as e:
                skipped[key] = str(e)
                continue
        labels_of.setdefault(name, []).append(label)
    for name, note in skipped.items():
        log.warning("zeroshot/%s skipped: %s", name, note)
    if not results:
        raise BenchmarkMissing("; ".join(skipped.values()) or "no --zeroshot-datasets given")
    summary, chance = {}, {}
    outcomes = Outcomes("index of the image in the dataset")
    for name, r in results.items():
        hits = r.pop("hits")
        metrics = ["acc1"] + (["acc5"] if r["acc5"] == r["acc5"] else [])
        for short in labels_of[name]:
            for m in metrics:
                summary[f"{short}/{m}"] = r[m]
                chance[f"{short}/{m}"] = min(1.0, (1 if m == "acc1" else 5) / r["num_classes"])
                outcomes.add_group(f"{short}/{m}", range(len(hits[m])), hits[m])
                outcomes.add_metric(f"{short}/{m}", [f"{short}/{m}"])
    suite_records = {}
    for suite, tasks in suites.items():
        done = [t for t in tasks if f"{t}/acc1" in summary]
        missing = [t for t in tasks if t not in done]
        suite_records[suite] = {"tasks": tasks,
                                "datasets": {t: n for n in results for t in labels_of[n] if t in tasks},
                                "missing": missing,
                                "mean_of_present": mean(summary[f"{t}/acc1"] for t in done) if done else None}
        if tasks and not missing:
            summary[f"{suite}/avg"] = mean(summary[f"{t}/acc1"] for t in tasks)
            chance[f"{suite}/avg"] = mean(chance[f"{t}/acc1"] for t in tasks)
            outcomes.add_metric(f"{suite}/avg", [f"{t}/acc1" for t in tasks])
        else:
            log.warning("zeroshot: %s/avg left out: %d of its %d tasks not evaluated (%s)", suite, len(missing),
                        len(tasks), ", ".join(missing) or "clip_benchmark is not installed")
    return {"datasets": results, "skipped": skipped, "suites": suite_records, "summary": summary, "chance": chance,
            "outcomes": outcomes.to_json()}


def _suite_protocol(datasets) -> Dict:
    """The tasks (and candidate datasets) of every suite asked for, for the protocol record."""
    suites = {d: [list(c) for c in suites_mod.suite_tasks(d)] for d in datasets if suites_mod.suite_tasks(d) is not None}
    return {"zeroshot_suites": suites} if suites else {}


def _add_arguments(group) -> None:
    group.add_argument("--zeroshot-datasets", default="imagenet1k,cifar10,cifar100",
                       help="comma-separated clip_benchmark dataset names, folder:NAME, or a suite ("
                            + ", ".join(suites_mod.suite_names()) + ": every task of it and <suite>/avg), "
                            "under DATA_ROOT/zeroshot/")
    group.add_argument("--zeroshot-backend", choices=("auto", "clip_benchmark", "builtin"), default="auto")


BENCHMARK = Benchmark(
    name=NAME, order=90, evaluate=evaluate,
    title="Zero-shot classification retention (clip_benchmark datasets, class names and templates)",
    headline=("*/acc1",),
    defaults={"datasets": ("imagenet1k", "cifar10", "cifar100"), "backend": "auto"},
    add_arguments=_add_arguments,
    options=lambda args: {"datasets": tuple(s.strip() for s in args.zeroshot_datasets.split(",") if s.strip()),
                          "backend": args.zeroshot_backend},
    protocol=lambda cfg: {"zeroshot_datasets": list(cfg["datasets"]), "zeroshot_backend": cfg["backend"],
                          **_suite_protocol(cfg["datasets"])},
)
