"""One shard: read it, generate the negatives of its captions chunk by chunk, write the output shard.

Chunks are pipelined: chunk *i + 1* is tagged and its fills sent before the fills of chunk *i* are
collected (:data:`IN_FLIGHT` chunks in flight), so a remote masked LM (a GPU process, a Ray actor)
computes while this worker tags. The samples are still written in input order.

Every input member is copied byte for byte (headers included); after each sample's members comes
``<key>.neg.json``. A sample without a usable caption passes through with all-null negatives and is
counted by kind (:data:`PROBLEM_KINDS`). Samples are split as open_clip splits them
(:func:`~openclip_ce.shards.tario.read_samples`): a key that repeats right after itself
(``k.jpg k.txt k.jpg k.txt``) is two samples, each with its own ``neg.json`` (counted as
``duplicate_key``). Members webdataset would unpickle are copied like the rest and counted
(``pickled_member``, :mod:`openclip_ce.pickled`). A full disk stops the run (:class:`DiskFull`).
The output is written under a temporary name and renamed into place only when complete
(:class:`~openclip_ce.shards.tario.ShardWriter`); the shard's ``done`` record (what makes it count as
complete) is written only after that rename.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..fileio import write_json_atomic
from ..negatives import NEG_MEMBER, NEG_TYPES, empty_negatives, encode_negatives
from ..pickled import is_pickled
from .captions import CAPTION_NOT_FOUND, CaptionReader
from .plan import ShardJob
from .tario import ShardFormatError, ShardWriter, member_ext, read_samples, remove_stale_partials

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # chunks of one worker between tagging and writing

PROBLEM_KINDS = ("no_caption", "empty_caption", "non_utf8_caption", "caption_too_long", "bad_caption_json",
                 "non_string_caption", "other_language_caption", "replaced_neg_json")
# not about the caption (counted in the same ``problems``): a key repeated by the next sample (each still
# gets its own negatives), a member webdataset's decoders would unpickle (copied through; the plugin's
# training stage drops it)
SAMPLE_PROBLEM_KINDS = ("duplicate_key", "pickled_member")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SampleError(Exception):
    """A sample that failed its shard: the message names the shard and the sample key."""


class FillerDied(UserError):
    """A masked-LM process died during the run (killed, out of memory): one line, the run stops; the
    shards completed so far stay complete, so a rerun resumes."""


class DiskFull(UserError):
    """No space left (or over quota) where the output is written: not one shard's fault, so the run
    stops with one line; no temporary file is left, completed shards stay complete, a rerun resumes."""


class ShardStats:
    def __init__(self, job: ShardJob):
        self.job = job
        self.samples = 0
        self.negatives = {t: 0 for t in NEG_TYPES}
        self.problems: Dict[str, int] = {}
        self.samples_with_problems = 0
        self.samples_without_negatives = 0
        self._last_sample = -1  # index (self.samples) of the last sample counted as having a problem
        self.problem_examples: List[Dict[str, str]] = []
        self.examples: List[Dict[str, object]] = []

    def problem(self, key: str, kind: str, members: Sequence[str] = ()) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        if self._last_sample != self.samples:
            self.samples_with_problems += 1
            self._last_sample = self.samples
        if len(self.problem_examples) < 5 or all(e["kind"] != kind for e in self.problem_examples):  # each kind named
            example = {"shard": self.job.src, "key": key, "kind": kind}
            if kind in CAPTION_NOT_FOUND:
                example["members"] = sorted(members)  # what the sample has, for a wrong --caption-key
            self.problem_examples.append(example)

    def as_dict(self, seconds: float, timings: Dict[str, float]) -> Dict[str, object]:
        return {"shard": self.job.rel, "src": self.job.src, "status": "ok", "samples": self.samples,
                "negatives": self.negatives, "problems": self.problems,
                "samples_with_problems": self.samples_with_problems,
                "samples_without_negatives": self.samples_without_negatives,
                "problem_examples": self.problem_examples, "examples": self.examples,
                "seconds": round(seconds, 3), **timings}


def process_shard(job: ShardJob, gen, captions: CaptionReader, chunk_size: int,
                  progress: Callable[[int], None] = lambda n: None) -> Dict:
    """Read ``job.src``, write ``job.target`` with ``neg.json`` per sample (its captions read by ``captions``,
    generated ``chunk_size`` at a time), write its ``done`` record ``job.record``, return its statistics.
    Raises :class:`ShardFormatError` for an unreadable shard (nothing is left under the target name)."""
    t0 = time.perf_counter()
    before = gen.timings.as_dict() if gen is not None else {}
    if not os.path.exists(job.src):
        raise ShardFormatError(f"{job.src}: no such file")
    remove_stale_partials(job.target)
    stats = ShardStats(job)
    writer = ShardWriter(job.target)
    pending: List[Tuple[Optional[str], List, Optional[str]]] = []  # (key, members, caption)
    in_flight: Deque = deque()  # (samples, prepared chunk or None, number of captions)

    def write(samples, prep, n):
        negs = iter(_guarded(gen.finish, prep, gen, prep.items) if prep is not None else [])
        for key, members, caption in samples:
            for m in members:
                writer.write_raw(m.raw)
            if key is None:
                continue
            neg = next(negs) if caption is not None else empty_negatives()
            made = 0
            for t in NEG_TYPES:
                made += neg[t] is not None
                stats.negatives[t] += neg[t] is not None
            stats.samples_without_negatives += not made
            if caption is not None and len(stats.examples) < 3 and any(v is not None for v in neg.values()):
                stats.examples.append({"key": key, "caption": caption, "neg": neg})
            writer.add(f"{key}.{NEG_MEMBER}", encode_negatives(neg), members[-1].mtime if members else 0)
        progress(n)

    def flush(last=False):
        items = [(k, c) for k, _, c in pending if c is not None]
        if pending:
            prep = _guarded(gen.prepare, items, gen, items) if items and gen is not None else None
            in_flight.append((list(pending), prep, len(items)))
            pending.clear()
        while in_flight and (last or len(in_flight) >= IN_FLIGHT):
            write(*in_flight.popleft())

    try:
        n_captions = 0
        previous_key = None
        for key, members in read_samples(job.src, scratch_dir=os.path.dirname(job.target)):
            if key is None:
                pending.append((None, members, None))
                continue
            stats.samples += 1
            if key == previous_key:  # open_clip starts a new sample here too: this one gets its own negatives
                stats.problem(key, "duplicate_key")
            previous_key = key
            by_ext = {}
            kept = []
            for m in members:
                ext = member_ext(m)  # lower case, as open_clip's samples have it; None: skipped by webdataset
                if ext == NEG_MEMBER:
                    stats.problem(key, "replaced_neg_json")  # an earlier neg.json is replaced, not duplicated
                    continue
                if ext is not None:
                    by_ext.setdefault(ext, m.data)
                    if is_pickled(ext):
                        stats.problem(key, "pickled_member")
                kept.append(m)
            caption, problem = captions.read(by_ext, gen.tagger if gen is not None else None)
            if problem:
                stats.problem(key, problem, by_ext)
            else:
                n_captions += 1
            pending.append((key, kept, caption))
            if n_captions >= chunk_size:
                flush()
                n_captions = 0
        flush(last=True)
        result = stats.as_dict(time.perf_counter() - t0, _timing_delta(gen, before))
        # the shard first, its ``done`` record second: a crash in between leaves a shard without a
        # record, which the next run redoes. The other order could leave the record of a new shard
        # next to the old file it never replaced (under --overwrite), taken as complete forever.
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    write_json_atomic(job.record, result)
    pickled = result["problems"].get("pickled_member")
    if pickled:
        example = next(e["key"] for e in stats.problem_examples if e["kind"] == "pickled_member")
        log.warning("%s: %d member(s) that webdataset's decoders unpickle (.pyd/.pickle/.pth; first in sample "
                    "%r): copied through unchanged; a --loss ce_clip training run drops them, stock open_clip "
                    "would unpickle them (code from the data)", job.src, pickled, example)
    return result


def _guarded(step, arg, gen, items):
    """``step(arg)`` (a chunk's prepare or finish); if it fails, the failure is raised again as a
    :class:`SampleError` that names the sample: each caption of the chunk is generated alone until one
    fails the same way (a failure no single caption repeats names the chunk's first and last keys)."""
    try:
        return step(arg)
    except FillerDied:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the sample's key
        for key, caption in items:
            try:
                gen.generate([(key, caption)])
            except FillerDied:
                raise
            except Exception as e1:  # noqa: BLE001
                raise SampleError(f"sample {key}: {type(e1).__name__}: {e1}") from e1
        raise SampleError(f"samples {items[0][0]} .. {items[-1][0]}: {type(e).__name__}: {e}") from e


def _timing_delta(gen, before: Dict[str, float]) -> Dict[str, float]:
    if gen is None:
        return {"tag_s": 0.0, "fill_s": 0.0, "wait_s": 0.0, "fills": 0}
    now = gen.timings.as_dict()
    return {k: round(now[k] - before.get(k, 0), 3) for k in ("tag_s", "fill_s", "wait_s", "fills")}


def run_job(job: ShardJob, gen, captions: CaptionReader, chunk_size: int, progress) -> Dict:
    """:func:`process_shard`, turning a failure of this shard into a ``failed`` result (others go on)."""
    try:
        return process_shard(job, gen, captions, chunk_size, progress)
    except FillerDied:  # not this shard's fault: the run stops (one line), a rerun resumes
        raise
    except Exception as e:  # noqa: BLE001 - one bad shard must not stop the others
        if isinstance(e, OSError) and e.errno in DISK_FULL:  # every shard would fail next: the run stops
            raise DiskFull(f"{os.strerror(e.errno)}: {e.filename or job.target} (writing shard {job.rel}); no "
                           f"partial file is left and the shards completed so far are kept: free space under "
                           f"{os.path.dirname(job.target)} and rerun the same command to resume") from None
        msg = (str(e) if isinstance(e, ShardFormatError) else f"{job.src}: {e}" if isinstance(e, SampleError)
               else f"{job.src}: {type(e).__name__}: {e}")
        if not isinstance(e, (ShardFormatError, OSError)):
            log.exception("unexpected error on shard %s", job.src)
        return {"shard": job.rel, "src": job.src, "status": "failed", "error": msg}


def log_result(res: Dict) -> None:
    if res["status"] == "failed":
        log.error("shard failed: %s", res["error"])
