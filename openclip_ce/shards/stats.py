"""``stats.json``: the statistics of a make-shards run summed over its shards' ``done`` records."""

from __future__ import annotations

from typing import Dict, List, Sequence

from ..negatives import NEG_TYPES
from .plan import ShardJob, read_done_record


def aggregate(out: str, jobs: Sequence[ShardJob], results: Sequence[Dict], skipped: int, wall: float,
              settings: Dict[str, object], run_info: Dict) -> Dict:
    failed = [r for r in results if r["status"] == "failed"]
    failed_rel = {r["shard"] for r in failed}
    per_shard = []
    for job in jobs:
        record = None if job.rel in failed_rel else read_done_record(out, job.rel)
        if record is not None:  # else not made, or damaged (is_complete has it made again next run)
            per_shard.append(record)
    samples = sum(s["samples"] for s in per_shard)
    negatives = {t: sum(s["negatives"][t] for s in per_shard) for t in NEG_TYPES}
    problems: Dict[str, int] = {}
    for s in per_shard:
        for k, v in s["problems"].items():
            problems[k] = problems.get(k, 0) + v
    this_run = [r for r in results if r["status"] == "ok"]
    captions = sum(r["samples"] for r in this_run)
    tag_s = sum(r.get("tag_s", 0) for r in this_run)
    fill_s = sum(r.get("fill_s", 0) for r in this_run)
    wait_s = sum(r.get("wait_s", 0) for r in this_run)
    return {
        "samples": samples,
        "shards": {"total": len(jobs), "complete": len(per_shard), "written_this_run": len(this_run),
                   "skipped_complete": skipped, "failed": len(failed)},
        "failed_shards": [{"shard": r["src"], "error": r["error"]} for r in failed],
        "coverage": {t: round(negatives[t] / samples, 6) if samples else 0.0 for t in NEG_TYPES},
        "negatives": negatives,
        "problems": {k: problems[k] for k in sorted(problems)},
        "samples_with_problems": sum(s["samples_with_problems"] for s in per_shard),
        # every sample whose four negatives are all null (a problem, or no editable word)
        "samples_without_negatives": sum(s.get("samples_without_negatives", 0) for s in per_shard),
        "problem_examples": _examples([e for s in per_shard for e in s["problem_examples"]]),
        "throughput": {
            "seconds": round(wall, 3), "samples_this_run": captions,
            "samples_per_s": round(captions / wall, 2) if wall > 0 else None,
            "tag_s": round(tag_s, 3), "fill_s": round(fill_s, 3), "wait_s": round(wait_s, 3),
            "fills": sum(r.get("fills", 0) for r in this_run),
            "limited_by": limited_by(tag_s, fill_s, wait_s) if this_run else None,
        },
        "examples": [e for s in per_shard for e in s["examples"]][:8],
        "settings": settings,
        "run": run_info,
    }


def _examples(examples: List[Dict], n: int = 20) -> List[Dict]:
    """The first ``n`` problem examples, and the first of every kind not among them."""
    kinds = {e["kind"] for e in examples[:n]}
    more = []
    for e in examples[n:]:
        if e["kind"] not in kinds:
            kinds.add(e["kind"])
            more.append(e)
    return examples[:n] + more


def limited_by(tag_s: float, fill_s: float, wait_s: float) -> str:
    """Which side limits the run, from the workers' summed seconds: ``wait_s`` is time spent waiting for
    fills (a masked LM in the worker computing them, or a remote one not done yet), the rest (tagging,
    encoding, choosing) is the workers' own CPU work. The side with more seconds is the limit."""
    return "filling (masked LM)" if wait_s > tag_s + (fill_s - wait_s) else "tagging (CPU)"


def workers_summary(results: Sequence[Dict]) -> List[Dict]:
    """Per worker of this run: its device, shards and captions done, seconds busy with shards, and peak
    GPU memory (MiB, the allocator's; None off-GPU). In ``stats.json`` under ``run.workers_detail``: a
    GPU that did nothing, or one worker holding far more memory than the others, shows here."""
    by: Dict[object, Dict] = {}
    for r in results:
        if "worker" not in r:
            continue
        w = by.setdefault(r["worker"], {"worker": r["worker"], "device": r.get("device"), "shards": 0,
                                        "failed": 0, "captions": 0, "busy_s": 0.0, "peak_gpu_mib": None})
        w["shards"] += 1
        w["busy_s"] = round(w["busy_s"] + r.get("seconds", 0.0), 3)
        w["failed"] += r["status"] != "ok"
        w["captions"] += r.get("samples", 0) if r["status"] == "ok" else 0
        if r.get("peak_gpu_mib") is not None:
            w["peak_gpu_mib"] = max(w["peak_gpu_mib"] or 0.0, r["peak_gpu_mib"])
    return [by[k] for k in sorted(by, key=lambda k: (type(k).__name__, k))]
