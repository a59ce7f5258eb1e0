"""The plan of a make-shards run: which shards (inputs expanded), where each goes, and the resume state.

Resume state lives in ``--out/.make-shards/``: ``config.json`` holds the output settings of the run
that started the directory (a rerun with other settings is refused unless ``--overwrite``), plus what
the last run chose for speed alone (:data:`RECORDED_ONLY`: never compared), and ``done/<shard>.json``
the statistics of each complete shard. A shard counts as complete when both
its file and its ``done`` record exist.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import braceexpand

from ..errors import UserError
from ..fileio import write_json_atomic
from ..negatives import NEG_TYPES
from .tario import GZ_SUFFIXES

log = logging.getLogger(__name__)

STATE_DIR = ".make-shards"
# in config.json, recorded but not compared on resume: choices that do not change the output bytes
# (the tagging ops keep the default's tags, checked at start; another machine may choose otherwise)
RECORDED_ONLY = ("tagging_ops",)
SHARD_SUFFIXES = (".tar",) + GZ_SUFFIXES


@dataclass
class ShardJob:
    src: str     # input path
    rel: str     # relative name, mirrored under --out
    target: str  # output path
    record: str  # its ``done`` record (written once the shard is complete)


def _expand_one(spec: str, out_root: str, lists: Tuple[str, ...] = ()) -> Tuple[List[str], List[str]]:
    """-> (shard paths, directory roots). ``lists``: the ``@`` list files being read, outermost first."""
    if spec.startswith("@"):
        name = os.path.abspath(spec[1:])
        if name in lists:
            chain = " -> ".join(f"@{p}" for p in (*lists[lists.index(name):], name))
            raise UserError(f"the list of shards {spec[1:]!r} names itself ({chain})")
        try:
            with open(spec[1:], encoding="utf-8") as f:
                lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
        except (OSError, UnicodeError) as e:
            raise UserError(f"cannot read the list of shards {spec[1:]!r}: {getattr(e, 'strerror', None) or e}") from None
        paths, roots = [], []
        for line in lines:
            p, r = _expand_one(line, out_root, (*lists, name))
            if not p:
                raise UserError(f"{line!r} in the list of shards {spec[1:]!r} matches no shard")
            paths += p
            roots += r
        return paths, roots
    if os.path.isdir(spec):
        root = os.path.abspath(spec)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and os.path.abspath(os.path.join(dirpath, d)) != out_root)
            found += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if f.endswith(SHARD_SUFFIXES) and not f.startswith(".")]
        return found, [root]
    paths = []
    for p in braceexpand.braceexpand(spec):
        paths += sorted(glob.glob(p)) if glob.has_magic(p) else [p]
    return paths, []


def plan_jobs(specs: Sequence[str], out: str) -> List[ShardJob]:
    out_root = os.path.abspath(out)
    if not specs:
        raise UserError("no input shards given")
    paths, roots = [], []
    for spec in specs:
        p, r = _expand_one(spec, out_root)
        if not p:  # beside inputs that do match, it would be dropped in silence
            raise UserError(f"{spec!r} matches no shard" + (
                f" (a folder with no {', '.join(SHARD_SUFFIXES)} file)" if os.path.isdir(spec) else ""))
        paths += p
        roots += r
    seen, unique = set(), []
    for p in paths:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            unique.append(a)
    odd = next((p for p in unique if os.path.exists(p) and not os.path.isfile(p)), None)
    if odd is not None:  # a FIFO or a device would block the reader, a directory fail it
        raise UserError(f"{odd}: not a regular file (a FIFO, device or directory), so not a shard")
    root = os.path.commonpath(roots + [os.path.dirname(p) for p in unique])
    jobs = []
    for p in unique:
        rel = os.path.relpath(p, root)
        target = os.path.join(out_root, rel)
        if os.path.abspath(target) == p:
            raise UserError(f"--out {out} would overwrite the input shard {p}")
        jobs.append(ShardJob(p, rel, target, sidecar_path(out, rel)))
    if len({j.target for j in jobs}) != len(jobs):
        raise UserError("two inputs map to the same output name; give inputs with distinct relative names")
    clash = next((j for j in jobs if j.rel == "stats.json" or j.rel.split(os.sep)[0] == STATE_DIR), None)
    if clash is not None:
        raise UserError(f"{clash.src}: its output, {clash.target}, is where the run keeps its own statistics or "
                        f"state; rename the input")
    return jobs


def state_path(out: str, name: str) -> str:
    return os.path.join(os.path.abspath(out), STATE_DIR, name)


def sidecar_path(out: str, rel: str) -> str:
    return os.path.join(os.path.abspath(out), STATE_DIR, "done", rel + ".json")


_COUNTS = ("samples", "samples_with_problems")
_LISTS = ("problem_examples", "examples")


def _read_state(path: str) -> Tuple[object, Optional[str]]:
    """``(value, None)`` for a state file that holds a JSON object, else ``(None, what is wrong)``; a missing
    file raises FileNotFoundError."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as e:
        return None, f"{type(e).__name__}: {e}"
    return (value, None) if isinstance(value, dict) else (None, "not a JSON object")


def read_done_record(out: str, rel: str, warn: bool = False) -> Optional[Dict]:
    """The ``done`` record of the shard ``rel``, or None when there is none or it is not one that
    make-shards writes (cut by a crash of the machine, not just of the process, or edited): then the shard
    is made again (``warn``: say so)."""
    path = sidecar_path(out, rel)
    try:
        record, problem = _read_state(path)
    except FileNotFoundError:
        return None
    problem = problem or _record_problem(record)
    if problem is None:
        return record
    if warn:
        log.warning("%s: unreadable done record (%s); the shard is made again", path, problem)
    return None


def _record_problem(record: Dict) -> Optional[str]:
    count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    bad = [k for k in _COUNTS if not count(record.get(k))]
    bad += [k for k in _LISTS if not isinstance(record.get(k), list)]
    negatives, problems = record.get("negatives"), record.get("problems")
    if not (isinstance(negatives, dict) and all(count(negatives.get(t)) for t in NEG_TYPES)):
        bad.append("negatives")
    if not (isinstance(problems, dict) and all(count(v) for v in problems.values())):
        bad.append("problems")
    if "samples_without_negatives" in record and not count(record["samples_without_negatives"]):
        bad.append("samples_without_negatives")
    return f"no valid {', '.join(bad)}" if bad else None


def is_complete(out: str, job: ShardJob) -> bool:
    """The shard and a valid ``done`` record of it exist."""
    return os.path.isfile(job.target) and read_done_record(out, job.rel, warn=True) is not None


def check_settings(out: str, want: Dict[str, object], overwrite: bool) -> None:
    """Refuse to resume into ``out`` with other output settings; record this run's."""
    verify_settings(out, want, overwrite)
    record_settings(out, want, overwrite, None)


def verify_settings(out: str, want: Dict[str, object], overwrite: bool) -> None:
    """Refuse to resume into ``out`` with output settings other than ``want``
    (:meth:`~openclip_ce.shards.config.ShardsConfig.output_settings`; reads only: safe before the engine starts)."""
    path = state_path(out, "config.json")
    if os.path.exists(path) and not overwrite:
        have, problem = _read_state(path)
        if problem is not None:
            raise UserError(f"{path}: {problem}, so the settings of the shards in --out {out} are unknown; "
                            f"pass --overwrite to make them again, or use another --out")
        have = {k: v for k, v in have.items() if k not in RECORDED_ONLY}
        diff = {k: (have.get(k), want.get(k)) for k in set(have) | set(want) if have.get(k) != want.get(k)}
        if diff:
            details = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise UserError(f"--out {out} holds shards made with other settings ({details}); "
                            f"use the same settings to resume, another --out, or --overwrite")


def record_settings(out: str, want: Dict[str, object], overwrite: bool, tagging: Optional[Dict[str, object]]) -> bool:
    """Record this run's output settings ``want`` and its ``tagging`` ops (None: no shard to write, the last
    run's are kept), and, under ``overwrite``, forget every completed shard first. True when ``out`` had no
    record before (see :func:`forget_settings`)."""
    path = state_path(out, "config.json")
    first = not os.path.exists(path)
    if overwrite:
        # forget every completed shard *before* recording the new settings: an interrupted --overwrite
        # run must never leave old-settings shards that a later run takes for complete
        shutil.rmtree(os.path.join(os.path.abspath(out), STATE_DIR, "done"), ignore_errors=True)
        # and the vocabulary of --filler vocab, which the old settings decided (a resumed run reuses it)
        if os.path.exists(state_path(out, "vocab.json")):
            os.remove(state_path(out, "vocab.json"))
    recorded = tagging
    if recorded is None and os.path.exists(path):  # a run with nothing to do keeps what the last one chose
        try:
            last, _ = _read_state(path)
        except FileNotFoundError:
            last = None
        recorded = last.get("tagging_ops") if last is not None else None
    write_json_atomic(path, {**want, "tagging_ops": recorded})
    return first


def forget_settings(out: str) -> None:
    """Take back the record of a run that failed before it wrote a shard into an ``out`` that had none:
    kept, it would refuse the next run's other settings for shards that were never made."""
    try:
        os.remove(state_path(out, "config.json"))
    except FileNotFoundError:
        pass
