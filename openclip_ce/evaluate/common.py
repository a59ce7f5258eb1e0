"""Shared pieces of the benchmark readers: errors, image references, scoring cases, progress, files."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
from tqdm import tqdm

from ..errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (``--batch-size 0`` is a one-line usage error, not a
    traceback from torch's DataLoader, and ``--max-samples -1`` no silent slice)."""
    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v
    parse.__name__ = f"integer >= {minimum}"
    return parse


class BenchmarkMissing(Exception):
    """The benchmark's files are not under the data root: the benchmark is skipped with this note."""


class BenchmarkDataError(UserError, ValueError):
    """A benchmark file exists but does not follow the official format (message names file and entry)."""


@dataclass(frozen=True)
class ImageRef:
    """An image on disk, optionally cropped to ``box = (left, upper, right, lower)`` in pixels.

    ``origin`` (file and entry that asked for the image) is carried for error messages only and
    takes no part in equality, so the same crop of the same file is encoded once.
    ``data``: the encoded image itself when it lives inside another file (Winoground's parquet
    shards embed their PNGs); ``path`` then names it uniquely (``FILE#row=N/image_K``) for equality,
    de-duplication and messages, and is never opened.
    """

    path: str
    box: Optional[Tuple[float, float, float, float]] = None
    origin: str = field(default="", compare=False)
    data: Optional[bytes] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Case:
    """One image and the captions to rank for it; which caption is correct is the reader's business."""

    image: ImageRef
    texts: Tuple[str, ...]


@dataclass
class EvalOptions:
    """Protocol settings of one evaluation (recorded in the results JSON).

    ``settings`` holds each benchmark's own options by benchmark name (``{"valse": {"filter": False}}``);
    a benchmark reads them, merged with its defaults, through its registry record's ``settings(opts)``."""

    missing_images: Optional[str] = None   # "error" | "skip" | None = the benchmark's official behaviour
    image_roots: Dict[str, str] = field(default_factory=dict)
    settings: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def missing_policy(self, official: str = "error") -> str:
        return self.missing_images or official

    def image_root(self, key: str, default: Path) -> Path:
        return Path(os.path.expanduser(self.image_roots[key])) if key in self.image_roots else default


# --------------------------------------------------------------------------- files


def decode_json(data: bytes | str, where: str) -> Any:
    """The JSON value of ``data`` (a document's bytes); anything else is a one-line
    :class:`BenchmarkDataError` naming ``where``: bytes that are not UTF-8 (with their offset), text that
    is not JSON, or nesting deeper than Python's parser follows (it would raise ``RecursionError``)."""
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError as e:
        raise BenchmarkDataError(f"{where}: not valid UTF-8 JSON (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise BenchmarkDataError(f"{where}: not valid UTF-8 JSON ({e})") from None
    except RecursionError:
        raise BenchmarkDataError(f"{where}: not usable JSON (nested deeper than Python's JSON reader "
                                 f"follows, about {sys.getrecursionlimit()} levels)") from None


def load_json(path: Path) -> Any:
    """The JSON value in ``path`` (one-line errors: :func:`decode_json`)."""
    with open(path, "rb") as f:
        return decode_json(f.read(), str(path))


def load_json_list(path: Path, what: str) -> List[Any]:
    """A JSON file that must hold a list (of ``what``); otherwise a one-line error naming the file."""
    data = load_json(path)
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def present_parts(base: Path, names: Sequence[str], benchmark: str, what: str) -> Tuple[List[str], List[str]]:
    """``(present, missing)`` among ``base/NAME.json``; none present -> :class:`BenchmarkMissing`, some missing -> a warning."""
    present = [n for n in names if (base / f"{n}.json").is_file()]
    if not present:
        raise BenchmarkMissing(f"expected {what} ({', '.join(n + '.json' for n in names)}) in {base}")
    missing = [n for n in names if n not in present]
    if missing:
        log.warning("%s: %s missing from %s: %s", benchmark, what, base, ", ".join(missing))
    return present, missing


def accuracy_by_group(correct, groups: Sequence[str], names: Sequence[str]) -> Dict[str, Tuple[float, int]]:
    """``{name: (accuracy, n)}`` over the items whose group is ``name`` (NaN accuracy when n = 0)."""
    out = {}
    for name in names:
        mask = [g == name for g in groups]
        n = sum(mask)
        out[name] = (float(correct[mask].mean()) if n else float("nan"), n)
    return out


def load_jsonl(path: Path) -> List[Tuple[int, Any]]:
    """The values of a JSON Lines file with their line numbers in the file (1-based; blank lines are
    skipped but counted). A line that is not JSON is a one-line error naming the file and the line."""
    rows = []
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is named like any other bad line
        for lineno, line in enumerate(f, 1):
            if line.strip():
                rows.append((lineno, decode_json(line, f"{path}: line {lineno}")))
    return rows


def field_of(entry: Any, key: str, kind: type | Tuple[type, ...], where: str) -> Any:
    """``entry[key]`` checked to be of ``kind``; otherwise a one-line error naming ``where``."""
    if not isinstance(entry, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise BenchmarkDataError(f"{where}: missing field {key!r}")
    value = entry[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BenchmarkDataError(f"{where}: field {key!r} must be {_kind_name(kind)}, got bool")
    if not isinstance(value, kind):
        raise BenchmarkDataError(f"{where}: field {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise BenchmarkDataError(f"{where}: field {key!r} is empty")
    return value


_HF_SHARD = re.compile(r"(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})(?:-[0-9a-f]+)?\.parquet")


def parquet_shards(folder: Path, pattern: str = "*.parquet") -> List[Path]:
    """The parquet shards in ``folder``, sorted by name. Hugging Face names them
    ``<split>-<i>-of-<n>[-<hash>].parquet``: two files for one shard (two revisions downloaded into one
    folder) or a shard missing is a :class:`BenchmarkDataError` naming them, since read as they are the
    rows would count twice or in part. Other names are taken as they are."""
    shards = sorted(folder.glob(pattern))
    seen: Dict[Tuple[str, int, int], Path] = {}
    for path in shards:
        m = _HF_SHARD.fullmatch(path.name)
        if m is None:
            continue
        key = (m["split"], int(m["i"]), int(m["n"]))
        if key in seen:
            raise BenchmarkDataError(f"{folder}: {seen[key].name} and {path.name} are the same shard "
                                     f"(two downloads of the dataset?): keep one revision")
        seen[key] = path
    for split, n in {(k[0], k[2]) for k in seen}:
        missing = [i for i in range(n) if (split, i, n) not in seen]
        if missing:
            raise BenchmarkDataError(f"{folder}: {split} shard(s) {missing} of {n} missing "
                                     f"(expected {split}-{missing[0]:05d}-of-{n:05d}*.parquet)")
    return shards


def parquet_rows(paths: Sequence[Path], required: Sequence[str], optional: Sequence[str],
                 benchmark: str) -> Iterator[Tuple[Path, int, str, Dict[str, Any]]]:
    """Every row of the parquet shards ``paths``, in shard then row order: ``(path, row, where, values)``.

    Reads ``required`` and whichever of ``optional`` a shard has. A shard without a required column,
    or that is not a readable parquet file, is a :class:`BenchmarkDataError` naming it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise BenchmarkDataError(f"{paths[0]}: reading {benchmark}'s parquet files needs pyarrow "
                                 f"(pip install pyarrow, or openclip-ce[eval])") from e
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            missing = [c for c in required if c not in names]
            if missing:
                raise BenchmarkDataError(f"{path}: missing column(s) {', '.join(map(repr, missing))} "
                                         f"(has {', '.join(names)})")
            batches = pf.iter_batches(batch_size=64, columns=[c for c in (*required, *optional) if c in names])
            row = 0
            for batch in batches:
                for values in batch.to_pylist():
                    yield path, row, f"{path} row {row}", values
                    row += 1
        except BenchmarkDataError:
            raise
        except Exception as e:  # not a parquet file, truncated, unreadable
            raise BenchmarkDataError(f"{path}: not a readable parquet file ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:300]})") from e


def embedded_image(value: Any, where: str, column: str) -> bytes:
    """The encoded image of a parquet cell: Hugging Face's Image struct ``{bytes, path}`` or plain bytes."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise BenchmarkDataError(f"{where}: column {column!r} holds no embedded image bytes")
    return bytes(data)


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def drop_missing_images(items: Sequence[T], image_of: Callable[[T], Sequence[ImageRef]], policy: str,
                        benchmark: str) -> Tuple[List[T], int]:
    """Keep the items whose images exist. ``policy="error"``: a missing image is an error naming it."""
    kept, missing, first = [], 0, None
    exists: Dict[str, bool] = {}
    for item in items:
        refs = image_of(item)
        ok = True
        for ref in refs:
            if ref.path not in exists:
                exists[ref.path] = ref.data is not None or os.path.isfile(ref.path)
            if not exists[ref.path]:
                ok = False
                first = first or ref
        if ok:
            kept.append(item)
        else:
            missing += 1
    if missing and policy == "error":
        raise BenchmarkDataError(
            f"{first.origin}: image not found: {first.path} ({missing} item(s) of {benchmark} lack their image; "
            f"--missing-images skip drops them and records the count)"
        )
    if missing:
        log.warning("%s: %d item(s) skipped because their image is missing (first: %s)", benchmark, missing, first.path)
    return kept, missing


def json_dumps(obj: Any) -> str:
    return json.dumps(_finite(obj), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _finite(obj.item())
    return obj


# --------------------------------------------------------------------------- progress


def progress(iterable: Iterable[T], total: Optional[int], desc: str, unit: str = "it") -> Iterator[T]:
    """A tqdm bar on a terminal; on a pipe or log file, a log line at every 10%."""
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True)
        return
    step = (total // 10) if total and total >= 10 else (total or 1)
    done = 0
    for x in iterable:
        yield x
        done += 1
        if total and (done % step == 0 or done == total):
            log.info("%s: %d/%d %s", desc, done, total, unit)


# --------------------------------------------------------------------------- metrics


def mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


def pos_wins(scores, pos_index: int = 0, ties_win: bool = False):
    """Boolean per row: the caption at ``pos_index`` scores above every other caption.

    A tie counts as a miss unless ``ties_win`` (ARO's Order sets, where the authors' argmax puts the
    original caption first on a tie)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[0] == 0:  # every item skipped (e.g. --missing-images skip): no wins, accuracies are NaN
        return np.zeros(0, dtype=bool)
    others = np.delete(scores, pos_index, axis=1).max(axis=1)
    return scores[:, pos_index] >= others if ties_win else scores[:, pos_index] > others
