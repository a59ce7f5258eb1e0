"""``openclip-ce make-shards``: write hard negatives (``neg.json``) next to every caption of WebDataset shards.

Each output shard mirrors an input shard (same relative name under ``--out``): every input member is
copied byte for byte, and after each sample's members comes ``<key>.neg.json`` (format:
:mod:`openclip_ce.negatives`). Generation: :mod:`openclip_ce.generate`. Shard I/O: :mod:`openclip_ce.shardio`.

Resumable: a shard is written under a hidden temporary name and renamed when complete, after its
statistics (``--out/.make-shards/done/<shard>.json``); a rerun skips complete shards. The settings
that decide the output are recorded in ``--out/.make-shards/config.json`` and a rerun with different
ones is refused (``--overwrite`` to start over). ``stats.json`` at the output root sums everything up.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .negatives import NEG_MEMBER, NEG_TYPES, encode_negatives, empty_negatives, parse_neg_types
from .fileio import write_json_atomic
from .shardio import GZ_SUFFIXES, ShardFormatError, ShardWriter, read_samples, remove_stale_partials

log = logging.getLogger("openclip_ce.make_shards")

STATE_DIR = ".make-shards"
SHARD_SUFFIXES = (".tar",) + GZ_SUFFIXES
PROBLEM_KINDS = ("no_caption", "empty_caption", "non_utf8_caption", "caption_too_long", "bad_caption_json",
                 "replaced_neg_json")
# settings that change the bytes written: a resumed run must use the same ones
OUTPUT_SETTINGS = ("seed", "types", "filler", "filler_model", "spacy_model", "top_k", "caption_key",
                   "caption_json_field", "max_caption_chars", "vocab_captions", "vocab_per_tag")


class UsageError(Exception):
    """Bad command line or output directory: reported as one line, exit code 2."""


# ----------------------------------------------------------------------------- configuration
@dataclass
class Config:
    seed: int = 0
    types: Tuple[str, ...] = NEG_TYPES
    filler: str = "mlm"
    filler_model: str = "distilroberta-base"
    spacy_model: str = "en_core_web_sm"
    top_k: int = 10
    caption_key: str = "txt"
    caption_json_field: Optional[str] = None
    max_caption_chars: int = 2000
    vocab_captions: int = 20000
    vocab_per_tag: int = 2000
    device: str = "cpu"
    fp32: bool = False
    batch_size: int = 256
    chunk_size: int = 512
    threads: int = 0
    vocab: Optional[Dict[str, List[str]]] = field(default=None, repr=False)

    def output_settings(self) -> Dict[str, object]:
        d = {k: getattr(self, k) for k in OUTPUT_SETTINGS}
        d["types"] = list(self.types)
        if self.filler != "mlm":
            d.pop("filler_model")
        if self.filler != "vocab":
            d.pop("vocab_captions"), d.pop("vocab_per_tag")
        return d


@dataclass
class ShardJob:
    src: str     # input path
    rel: str     # relative name, mirrored under --out
    target: str  # output path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="shards: brace patterns ('/data/{00000..00099}.tar'), globs, directories (searched for "
                        "*.tar, *.tar.gz, *.tgz), or @FILE with one path or pattern per line")
    p.add_argument("--out", required=True, help="output root; shard names mirror the inputs' relative names")
    g = p.add_argument_group("generation")
    g.add_argument("--types", default=",".join(NEG_TYPES), help="negative types to make (others are null)")
    g.add_argument("--seed", type=int, default=0, help="output is a function of the input and this seed only")
    g.add_argument("--filler", choices=("mlm", "vocab"), default="mlm",
                   help="mlm: masked LM fills; vocab: same-tag words from the corpus's own captions (no model)")
    g.add_argument("--filler-model", default="distilroberta-base",
                   help="masked LM for --filler mlm: hub name or local directory (model + tokenizer)")
    g.add_argument("--spacy-model", default="en_core_web_sm", help="spaCy pipeline used for POS tags")
    g.add_argument("--top-k", type=int, default=10, help="an MLM fill is drawn among the top-k admissible words")
    g.add_argument("--device", default="cpu", help="device of the masked LM: cpu, cuda, cuda:1 ...")
    g.add_argument("--fp32", action="store_true", help="keep the masked LM in fp32 on GPU (default fp16)")
    g.add_argument("--batch-size", type=int, default=256, help="masked-LM batch size")
    g.add_argument("--chunk-size", type=int, default=512, help="captions tagged and filled together")
    g.add_argument("--vocab-captions", type=int, default=20000,
                   help="--filler vocab: captions read (from the first shards) to build the vocabulary")
    g.add_argument("--vocab-per-tag", type=int, default=2000, help="--filler vocab: most frequent words kept per tag")
    d = p.add_argument_group("data")
    d.add_argument("--caption-key", default=None,
                   help="member holding the caption (default: txt, or json with --caption-json-field)")
    d.add_argument("--caption-json-field", default=None,
                   help="read the caption from this field (dotted path) of the sample's JSON member")
    d.add_argument("--max-caption-chars", type=int, default=2000,
                   help="longer captions pass through with null negatives (counted as caption_too_long)")
    r = p.add_argument_group("execution")
    r.add_argument("--workers", type=int, default=1, help="shards processed in parallel (local processes / Ray tasks)")
    r.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)")
    r.add_argument("--engine", choices=("local", "ray"), default="local")
    r.add_argument("--ray-address", default=None,
                   help="Ray cluster to join ('auto' for the running one); default: start a local Ray")
    r.add_argument("--ray-fillers", type=int, default=0,
                   help="masked-LM actors (0: one per GPU with --device cuda, else one)")
    r.add_argument("--ray-gpus-per-filler", type=float, default=1.0, help="GPU share of each masked-LM actor")
    r.add_argument("--overwrite", action="store_true", help="redo every shard, even complete ones")
    r.add_argument("--skip-bad", action="store_true", help="exit 0 even if some shards could not be read")
    r.add_argument("--log-every", type=float, default=30.0, help="seconds between log lines when not on a terminal")
    r.add_argument("--no-progress", action="store_true", help="no progress bar, log lines only")


def config_from_args(args) -> Config:
    try:
        types = parse_neg_types(args.types)
    except ValueError as e:
        raise UsageError(str(e).replace("--ce-neg-types", "--types")) from None
    for name in ("top_k", "batch_size", "chunk_size", "workers", "max_caption_chars", "vocab_captions", "vocab_per_tag"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    caption_key = args.caption_key or ("json" if args.caption_json_field else "txt")
    return Config(
        seed=args.seed, types=types, filler=args.filler, filler_model=args.filler_model,
        spacy_model=args.spacy_model, top_k=args.top_k, caption_key=caption_key,
        caption_json_field=args.caption_json_field, max_caption_chars=args.max_caption_chars,
        vocab_captions=args.vocab_captions, vocab_per_tag=args.vocab_per_tag, device=args.device,
        fp32=args.fp32, batch_size=args.batch_size, chunk_size=args.chunk_size, threads=args.threads,
    )


# ----------------------------------------------------------------------------- inputs
def _expand_one(spec: str, out_root: str) -> Tuple[List[str], List[str]]:
    """-> (shard paths, directory roots)."""
    import braceexpand

    if spec.startswith("@"):
        try:
            with open(spec[1:], encoding="utf-8") as f:
                lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
        except OSError as e:
            raise UsageError(f"cannot read the list of shards {spec[1:]!r}: {e.strerror}") from None
        paths, roots = [], []
        for line in lines:
            p, r = _expand_one(line, out_root)
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
    paths, roots = [], []
    for spec in specs:
        p, r = _expand_one(spec, out_root)
        paths += p
        roots += r
    seen, unique = set(), []
    for p in paths:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            unique.append(a)
    if not unique:
        raise UsageError(f"no shards found in {list(specs)}")
    root = os.path.commonpath(roots + [os.path.dirname(p) for p in unique])
    jobs = []
    for p in unique:
        rel = os.path.relpath(p, root)
        target = os.path.join(out_root, rel)
        if os.path.abspath(target) == p:
            raise UsageError(f"--out {out} would overwrite the input shard {p}")
        jobs.append(ShardJob(p, rel, target))
    return jobs


def sidecar_path(out: str, rel: str) -> str:
    return os.path.join(os.path.abspath(out), STATE_DIR, "done", rel + ".json")


def is_complete(out: str, job: ShardJob) -> bool:
    return os.path.isfile(job.target) and os.path.isfile(sidecar_path(out, job.rel))


# ----------------------------------------------------------------------------- captions
def _json_field(obj, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def extract_caption(members_by_ext: Dict[str, bytes], cfg: Config) -> Tuple[Optional[str], Optional[str]]:
    """``(caption, None)`` or ``(None, problem kind)``."""
    raw = members_by_ext.get(cfg.caption_key)
    if raw is None:
        return None, "no_caption"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "non_utf8_caption"
    if cfg.caption_json_field:
        try:
            value = _json_field(json.loads(text), cfg.caption_json_field)
        except json.JSONDecodeError:
            return None, "bad_caption_json"
        if not isinstance(value, str):
            return None, "no_caption"
        text = value
    if not text.strip():
        return None, "empty_caption"
    if len(text) > cfg.max_caption_chars:
        return None, "caption_too_long"
    return text, None


# ----------------------------------------------------------------------------- one shard
class ShardStats:
    def __init__(self, job: ShardJob):
        self.job = job
        self.samples = 0
        self.negatives = {t: 0 for t in NEG_TYPES}
        self.problems: Dict[str, int] = {}
        self.samples_with_problems = 0
        self._last_sample = -1  # index (self.samples) of the last sample counted as having a problem
        self.problem_examples: List[Dict[str, str]] = []
        self.examples: List[Dict[str, object]] = []

    def problem(self, key: str, kind: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        if self._last_sample != self.samples:
            self.samples_with_problems += 1
            self._last_sample = self.samples
        if len(self.problem_examples) < 5:
            self.problem_examples.append({"shard": self.job.src, "key": key, "kind": kind})

    def as_dict(self, seconds: float, timings: Dict[str, float]) -> Dict[str, object]:
        return {"shard": self.job.rel, "src": self.job.src, "status": "ok", "samples": self.samples,
                "negatives": self.negatives, "problems": self.problems,
                "samples_with_problems": self.samples_with_problems,
                "problem_examples": self.problem_examples, "examples": self.examples,
                "seconds": round(seconds, 3), **timings}


def process_shard(job: ShardJob, out: str, gen, cfg: Config, progress: Callable[[int], None] = lambda n: None) -> Dict:
    """Read ``job.src``, write ``job.target`` with ``neg.json`` per sample, return its statistics.
    Raises :class:`ShardFormatError` for an unreadable shard (nothing is left under the target name)."""
    t0 = time.perf_counter()
    before = gen.timings.as_dict() if gen is not None else {}
    if not os.path.exists(job.src):
        raise ShardFormatError(f"{job.src}: no such file")
    remove_stale_partials(job.target)
    stats = ShardStats(job)
    writer = ShardWriter(job.target)
    pending: List[Tuple[Optional[str], List, Optional[str]]] = []  # (key, members, caption)

    def flush():
        items = [(k, c) for k, _, c in pending if c is not None]
        negs = iter(gen.generate(items) if items and gen is not None else [])
        for key, members, caption in pending:
            for m in members:
                writer.write_raw(m.raw)
            if key is None:
                continue
            n = next(negs) if caption is not None else empty_negatives()
            for t in NEG_TYPES:
                stats.negatives[t] += n[t] is not None
            if caption is not None and len(stats.examples) < 3 and any(v is not None for v in n.values()):
                stats.examples.append({"key": key, "caption": caption, "neg": n})
            writer.add(f"{key}.{NEG_MEMBER}", encode_negatives(n), members[-1].mtime if members else 0)
        progress(len(items))
        pending.clear()

    try:
        n_captions = 0
        for key, members in read_samples(job.src, scratch_dir=os.path.dirname(job.target)):
            if key is None:
                pending.append((None, members, None))
                continue
            stats.samples += 1
            by_ext = {}
            kept = []
            for m in members:
                ext = m.name[len(key) + 1:]
                if ext == NEG_MEMBER:
                    stats.problem(key, "replaced_neg_json")  # an earlier neg.json is replaced, not duplicated
                    continue
                by_ext.setdefault(ext, m.data)
                kept.append(m)
            caption, problem = extract_caption(by_ext, cfg)
            if problem:
                stats.problem(key, problem)
            else:
                n_captions += 1
            pending.append((key, kept, caption))
            if n_captions >= cfg.chunk_size:
                flush()
                n_captions = 0
        flush()
        result = stats.as_dict(time.perf_counter() - t0, _timing_delta(gen, before))
        write_json_atomic(sidecar_path(out, job.rel), result)
        writer.commit()
        return result
    except BaseException:
        writer.abort()
        raise


def _timing_delta(gen, before: Dict[str, float]) -> Dict[str, float]:
    if gen is None:
        return {"tag_s": 0.0, "fill_s": 0.0, "fills": 0}
    now = gen.timings.as_dict()
    return {k: round(now[k] - before.get(k, 0), 3) for k in ("tag_s", "fill_s", "fills")}


# ----------------------------------------------------------------------------- generators
def build_generator(cfg: Config, filler=None):
    """The negative generator of one worker (loads spaCy and the filler; may raise GenerationSetupError)."""
    from .generate import MLMFiller, NegativeGenerator, SpacyTagger, VocabFiller

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    tagger = SpacyTagger(cfg.spacy_model, batch_size=min(cfg.chunk_size, 1024))
    needs_filler = any(t in ("att", "act", "obj") for t in cfg.types)
    if filler is None and needs_filler:
        if cfg.filler == "vocab":
            filler = VocabFiller(cfg.vocab or {})
        else:
            filler = MLMFiller(cfg.filler_model, device=cfg.device, batch_size=cfg.batch_size,
                               n_candidates=max(3 * cfg.top_k, cfg.top_k + 20),
                               half=False if cfg.fp32 else None)
    return NegativeGenerator(tagger, filler, seed=cfg.seed, types=cfg.types, top_k=cfg.top_k)


def build_vocab(jobs: Sequence[ShardJob], cfg: Config) -> Dict[str, List[str]]:
    """--filler vocab: the same-tag vocabulary from the first ``vocab_captions`` captions (shard order)."""
    from .generate import SpacyTagger, VocabFiller

    captions: List[str] = []
    for job in jobs:
        if len(captions) >= cfg.vocab_captions:
            break
        try:
            for key, members in read_samples(job.src):
                if key is None:
                    continue
                by_ext = {m.name[len(key) + 1:]: m.data for m in members}
                text, _ = extract_caption(by_ext, cfg)
                if text is not None:
                    captions.append(text)
                    if len(captions) >= cfg.vocab_captions:
                        break
        except (ShardFormatError, OSError) as e:
            log.warning("vocabulary: skipping %s (%s)", job.src, e)
    vocab = VocabFiller.from_captions(SpacyTagger(cfg.spacy_model), captions, per_tag=cfg.vocab_per_tag).vocab
    log.info("vocabulary filler: %d captions -> %s", len(captions),
             ", ".join(f"{t}:{len(w)}" for t, w in vocab.items()))
    return vocab


# ----------------------------------------------------------------------------- progress
class Progress:
    """tqdm bar (captions/s, shards done) on a terminal; periodic log lines otherwise."""

    def __init__(self, total: int, tty: bool, log_every: float):
        self.total, self.done, self.failed, self.captions = total, 0, 0, 0
        self.t0 = self._last = time.monotonic()
        self.log_every = log_every
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="shard", desc="make-shards", dynamic_ncols=True)

    def _rate(self) -> float:
        return self.captions / max(time.monotonic() - self.t0, 1e-9)

    def add_captions(self, n: int) -> None:
        self.captions += n
        self._tick()

    def shard_done(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self.bar is not None:
            self.bar.update(1)
        self._tick(force=self.done == self.total)

    def _tick(self, force: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix(captions=self.captions, captions_s=f"{self._rate():.0f}", failed=self.failed,
                                 refresh=False)
            return
        now = time.monotonic()
        if force or now - self._last >= self.log_every:
            self._last = now
            log.info("%d/%d shards done (%d failed), %d captions, %.0f captions/s",
                     self.done, self.total, self.failed, self.captions, self._rate())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- local engine
_WORKER: Dict[str, object] = {}


def _worker_init(cfg: Config, out: str, queue) -> None:
    # one BLAS / OpenMP pool per worker sized to its share of the cores (numpy is not imported yet)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cfg.threads or 1)
    _WORKER.update(cfg=cfg, out=out, queue=queue, gen=None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _worker_run(job: ShardJob) -> Dict:
    cfg, out, queue = _WORKER["cfg"], _WORKER["out"], _WORKER["queue"]
    if _WORKER["gen"] is None:
        _WORKER["gen"] = build_generator(cfg)
    return _run_job(job, out, _WORKER["gen"], cfg, queue.put)


def _run_job(job: ShardJob, out: str, gen, cfg: Config, progress) -> Dict:
    try:
        return process_shard(job, out, gen, cfg, progress)
    except Exception as e:  # noqa: BLE001 - one bad shard must not stop the others
        msg = str(e) if isinstance(e, ShardFormatError) else f"{job.src}: {type(e).__name__}: {e}"
        if not isinstance(e, (ShardFormatError, OSError)):
            log.exception("unexpected error on shard %s", job.src)
        return {"shard": job.rel, "src": job.src, "status": "failed", "error": msg}


def run_local(jobs: Sequence[ShardJob], out: str, cfg: Config, workers: int, progress: Progress) -> List[Dict]:
    results = []
    if workers == 1:
        gen = build_generator(cfg)
        for job in jobs:
            results.append(_run_job(job, out, gen, cfg, progress.add_captions))
            _log_result(results[-1])
            progress.shard_done(results[-1]["status"] == "ok")
        return results
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no fork after torch / spaCy state
    queue = ctx.Queue()
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(cfg, out, queue)) as ex:
        pending = {ex.submit(_worker_run, job) for job in jobs}
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                _drain(queue, progress)
                for fut in done:
                    res = fut.result()  # setup errors (GenerationSetupError) propagate: the run stops
                    results.append(res)
                    _log_result(res)
                    progress.shard_done(res["status"] == "ok")
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        _drain(queue, progress)
    return results


def _drain(queue, progress: Progress) -> None:
    import queue as queue_mod

    while True:
        try:
            progress.add_captions(queue.get_nowait())
        except queue_mod.Empty:
            return


def _log_result(res: Dict) -> None:
    if res["status"] == "failed":
        log.error("shard failed: %s", res["error"])


# ----------------------------------------------------------------------------- Ray engine
class _FillerActor:
    """Holds one masked LM (on a GPU when the cluster has them); fills requests batch by batch."""

    def __init__(self, cfg: Config):
        from .generate import MLMFiller

        self.filler = MLMFiller(cfg.filler_model, device=cfg.device, batch_size=cfg.batch_size,
                                n_candidates=max(3 * cfg.top_k, cfg.top_k + 20), half=False if cfg.fp32 else None)

    def fill(self, requests):
        return self.filler.fill(requests)


class _RemoteFiller:
    """Filler interface in front of a :class:`_FillerActor` (each call is one whole chunk: the actor's
    batch composition is the same as a local filler's)."""

    ranked = True
    name = "mlm"

    def __init__(self):
        self.actor = None

    def fill(self, requests):
        import ray

        return ray.get(self.actor.fill.remote(list(requests)))


_RAY_GEN: Dict[str, object] = {}


def _ray_shard(job: ShardJob, out: str, cfg: Config, actor) -> Dict:
    gen = _RAY_GEN.get("gen")
    if gen is None:
        gen = _RAY_GEN["gen"] = build_generator(cfg, filler=_RemoteFiller() if actor is not None else None)
    if actor is not None:
        gen.filler.actor = actor
    return _run_job(job, out, gen, cfg, lambda n: None)


def run_ray(jobs: Sequence[ShardJob], out: str, cfg: Config, args, progress: Progress) -> List[Dict]:
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'openclip-ce[ray]'") from None
    gpu = cfg.device.startswith("cuda")
    uses_actors = cfg.filler == "mlm" and any(t in ("att", "act", "obj") for t in cfg.types)
    if args.ray_address:
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=True)
    else:
        n_act = (args.ray_fillers or 1) if uses_actors and not gpu else 0
        ray.init(num_cpus=args.workers + n_act, include_dashboard=False, log_to_driver=True)
    try:
        actors = []
        if uses_actors:
            n = args.ray_fillers or (max(1, int(ray.cluster_resources().get("GPU", 0))) if gpu else 1)
            opts = {"num_gpus": args.ray_gpus_per_filler, "num_cpus": 1} if gpu else {"num_cpus": 1}
            actor_cls = ray.remote(_FillerActor).options(**opts)
            actors = [actor_cls.remote(cfg) for _ in range(n)]
            log.info("ray: %d masked-LM actor(s) on %s", n, "GPU" if gpu else "CPU")
        task = ray.remote(_ray_shard).options(num_cpus=1, max_retries=2)
        refs = {task.remote(job, out, cfg, actors[i % len(actors)] if actors else None): job
                for i, job in enumerate(jobs)}
        results = []
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                refs.pop(ref)
                res = ray.get(ref)  # setup errors propagate
                results.append(res)
                _log_result(res)
                if res["status"] == "ok":
                    progress.add_captions(res["samples"])
                progress.shard_done(res["status"] == "ok")
        return results
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- stats
def aggregate(out: str, jobs: Sequence[ShardJob], results: Sequence[Dict], skipped: int, wall: float,
              cfg: Config, run_info: Dict) -> Dict:
    failed = [r for r in results if r["status"] == "failed"]
    failed_rel = {r["shard"] for r in failed}
    per_shard = []
    for job in jobs:
        if job.rel in failed_rel:
            continue
        try:
            with open(sidecar_path(out, job.rel), encoding="utf-8") as f:
                per_shard.append(json.load(f))
        except FileNotFoundError:
            pass
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
    return {
        "samples": samples,
        "shards": {"total": len(jobs), "complete": len(per_shard), "written_this_run": len(this_run),
                   "skipped_complete": skipped, "failed": len(failed)},
        "failed_shards": [{"shard": r["src"], "error": r["error"]} for r in failed],
        "coverage": {t: round(negatives[t] / samples, 6) if samples else 0.0 for t in NEG_TYPES},
        "negatives": negatives,
        "problems": {k: problems[k] for k in sorted(problems)},
        "samples_with_problems": sum(s["samples_with_problems"] for s in per_shard),
        "problem_examples": [e for s in per_shard for e in s["problem_examples"]][:20],
        "throughput": {
            "seconds": round(wall, 3), "samples_this_run": captions,
            "samples_per_s": round(captions / wall, 2) if wall > 0 else None,
            "tag_s": round(tag_s, 3), "fill_s": round(fill_s, 3),
            "fills": sum(r.get("fills", 0) for r in this_run),
        },
        "examples": [e for s in per_shard for e in s["examples"]][:8],
        "settings": cfg.output_settings(),
        "run": run_info,
    }


# ----------------------------------------------------------------------------- main
def _check_settings(out: str, cfg: Config, overwrite: bool) -> None:
    path = os.path.join(os.path.abspath(out), STATE_DIR, "config.json")
    want = cfg.output_settings()
    if os.path.exists(path) and not overwrite:
        with open(path, encoding="utf-8") as f:
            have = json.load(f)
        diff = {k: (have.get(k), want.get(k)) for k in set(have) | set(want) if have.get(k) != want.get(k)}
        if diff:
            details = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise UsageError(f"--out {out} holds shards made with other settings ({details}); "
                             f"use the same settings to resume, another --out, or --overwrite")
    if overwrite:
        # forget every completed shard *before* recording the new settings: an interrupted --overwrite
        # run must never leave old-settings shards that a later run takes for complete
        shutil.rmtree(os.path.join(os.path.abspath(out), STATE_DIR, "done"), ignore_errors=True)
    write_json_atomic(path, want)


def run(args) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .generate import GenerationSetupError

    t0 = time.perf_counter()
    try:
        cfg = config_from_args(args)
        jobs = plan_jobs(args.inputs, args.out)
        targets = [j.target for j in jobs]
        if len(set(targets)) != len(targets):
            raise UsageError("two inputs map to the same output name; give inputs with distinct relative names")
        _check_settings(args.out, cfg, args.overwrite)
        todo = [j for j in jobs if args.overwrite or not is_complete(args.out, j)]
        skipped = len(jobs) - len(todo)
        log.info("%d shards: %d to write, %d already complete in %s", len(jobs), len(todo), skipped, args.out)
        if cfg.filler == "vocab" and todo and any(t in ("att", "act", "obj") for t in cfg.types):
            vocab_path = os.path.join(os.path.abspath(args.out), STATE_DIR, "vocab.json")
            if os.path.exists(vocab_path) and not args.overwrite:
                with open(vocab_path, encoding="utf-8") as f:
                    cfg.vocab = json.load(f)
            else:
                cfg.vocab = build_vocab(jobs, cfg)
                write_json_atomic(vocab_path, cfg.vocab)
        if not cfg.threads:
            cfg.threads = max(1, (os.cpu_count() or 1) // args.workers)
        progress = Progress(len(todo), sys.stderr.isatty() and not args.no_progress, args.log_every)
        try:
            if not todo:
                results = []
            elif args.engine == "ray":
                results = run_ray(todo, args.out, cfg, args, progress)
            else:
                results = run_local(todo, args.out, cfg, args.workers, progress)
        finally:
            progress.close()
    except (UsageError, GenerationSetupError) as e:
        print(f"openclip-ce make-shards: error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    run_info = {"engine": args.engine, "workers": args.workers, "device": cfg.device,
                "fp16": cfg.device.startswith("cuda") and not cfg.fp32}
    stats = aggregate(args.out, jobs, results, skipped, wall, cfg, run_info)
    write_json_atomic(os.path.join(os.path.abspath(args.out), "stats.json"), stats)
    failed = stats["failed_shards"]
    log.info("done: %d samples in %d complete shards (%d written now, %d skipped), %d failed; coverage %s; "
             "%.1f samples/s; stats in %s", stats["samples"], stats["shards"]["complete"],
             stats["shards"]["written_this_run"], skipped, len(failed),
             " ".join(f"{t}={c:.3f}" for t, c in stats["coverage"].items()),
             stats["throughput"]["samples_per_s"] or 0.0, os.path.join(args.out, "stats.json"))
    if failed:
        for f in failed:
            print(f"openclip-ce make-shards: failed shard: {f['error']}", file=sys.stderr)
        if not args.skip_bad:
            print(f"openclip-ce make-shards: {len(failed)} shard(s) failed (listed in stats.json); "
                  f"rerun to retry them, or pass --skip-bad to accept", file=sys.stderr)
            return 1
    return 0
