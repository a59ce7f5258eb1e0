"""The setup of a make-shards run: its decisions, each made in one function and returned as a value, and
the one place that builds the tagger, the fillers, the vocabulary and the generator.

Why a module of its own: the configuration (:class:`~openclip_ce.shards.config.ShardsConfig`) is what
the user asked for and never changes during a run (it is frozen), and it goes no further than the
command, its engine's constructor and this module's decisions. What the run decides from it is a value:

* :func:`threads_per_worker`: torch / BLAS threads of each worker (``--threads 0``: cores / workers);
* :func:`filler_kind`: which filler this run uses (none when ``--types`` needs no word filled), and
  :func:`masked_lm`: the masked LM to load (:class:`MaskedLM`), or None when the run needs none, the
  one rule both engines follow to start masked-LM processes or actors;
* :func:`caption_reader`: where the captions are and which ones get negatives
  (:class:`~openclip_ce.shards.captions.CaptionReader`);
* :func:`generation`: how the negatives are made (:class:`Generation`: spaCy model, seed, types, top-k);
* :func:`choose_tagging`: the matrix multiply of spaCy's tagger (``--tagging-ops``; ``auto`` measures,
  once per machine), recorded in ``config.json`` and ``stats.json``;
* :func:`vocabulary`: the ``--filler vocab`` vocabulary, reused from ``--out`` or built.

:func:`run_setup` gathers them in a :class:`RunSetup`, made once by the command and handed to every
worker (local process or Ray task, so it pickles); a worker builds its generator from it through
:func:`build_generator` only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..fileio import write_json_atomic
from ..generation.fillers import MLMFiller, RemoteMLMFiller, VocabFiller
from ..generation.generator import NegativeGenerator
from ..generation.tagging import SpacyTagger
from ..generation.tagging_ops import DEFAULT_OPS, cache_path, cached_choice, choose_ops, machine_key, store_choice
from .captions import CaptionReader
from .config import ShardsConfig
from .devices import bind_process_gpu, filler_device
from .plan import ShardJob, is_complete, state_path
from .tario import ShardFormatError, member_ext, read_samples

log = logging.getLogger(__name__)

FILLED_TYPES = ("att", "act", "obj")  # the negative types that need a word filled


@dataclass(frozen=True)
class MaskedLM:
    """The masked LM of a run: which one (``--filler-model``), on which device by default (``--device``),
    in batches of ``batch_size``, asked for ``n_candidates`` words per slot, in fp16 or not (``half``:
    None = fp16 on GPU, False with ``--fp32``)."""

    model: str
    device: str
    batch_size: int
    n_candidates: int
    half: Optional[bool]


@dataclass(frozen=True)
class Generation:
    """How a worker makes negatives: the spaCy pipeline and its batch (``--spacy-model``, ``--chunk-size``),
    ``--seed``, ``--types`` and ``--top-k``."""

    spacy_model: str
    tagger_batch: int
    seed: int
    types: Tuple[str, ...]
    top_k: int


@dataclass(frozen=True)
class RunSetup:
    """What a run decided from its configuration, once, before any shard is written: all a worker needs."""

    threads: int                   # torch / BLAS threads of each worker (>= 1)
    tagging: Dict[str, object]     # the tagging ops chosen ("ops") and how ("chosen_by", what was measured)
    filler: Optional[str]          # "mlm", "vocab", or None (no type to fill)
    generation: Generation
    captions: CaptionReader
    chunk_size: int                # captions tagged and filled together
    masked_lm: Optional[MaskedLM] = None  # with filler "mlm"
    log_level: str = "INFO"        # of a spawned worker
    vocab: Optional[Dict[str, List[str]]] = field(default=None, repr=False)  # the --filler vocab vocabulary

    @property
    def ops(self) -> str:
        return str(self.tagging["ops"])


# ----------------------------------------------------------------------------- the decisions
def threads_per_worker(cfg: ShardsConfig) -> int:
    """``--threads``, or this machine's cores shared among ``--workers`` (``--threads 0``)."""
    return cfg.threads or max(1, (os.cpu_count() or 1) // cfg.workers)


def filler_kind(cfg: ShardsConfig) -> Optional[str]:
    """``--filler`` when one of ``--types`` needs a word filled (att, act, obj), else None."""
    return cfg.filler if any(t in FILLED_TYPES for t in cfg.types) else None


def masked_lm(cfg: ShardsConfig) -> Optional[MaskedLM]:
    """The masked LM this run needs (in the workers, in GPU processes, or in Ray actors), or None."""
    if filler_kind(cfg) != "mlm":
        return None
    return MaskedLM(cfg.filler_model, cfg.device, cfg.batch_size, n_candidates=max(3 * cfg.top_k, cfg.top_k + 20),
                    half=False if cfg.fp32 else None)  # enough candidates left after the admissibility checks


def caption_reader(cfg: ShardsConfig) -> CaptionReader:
    return CaptionReader(cfg.caption_key, cfg.caption_json_field, cfg.max_caption_chars, cfg.languages)


def generation(cfg: ShardsConfig) -> Generation:
    return Generation(cfg.spacy_model, min(cfg.chunk_size, 1024), cfg.seed, cfg.types, cfg.top_k)


def choose_tagging(cfg: ShardsConfig, threads: int) -> Dict[str, object]:
    """The run's tagging ops: the one asked for, or (``--tagging-ops auto``) this machine's last measurement,
    or one measured now (:func:`~openclip_ce.generation.tagging_ops.choose_ops`, on ``threads``, the
    threads a worker will have)."""
    if cfg.tagging_ops != "auto":
        return {"ops": cfg.tagging_ops, "chosen_by": "--tagging-ops"}
    key = machine_key(cfg.spacy_model, threads)
    info = cached_choice(key)
    if info is not None:
        log.info("tagging ops: %s (measured on this machine before, %s)", info["ops"], cache_path())
        return {**info, "chosen_by": "--tagging-ops auto", "measured": f"before ({cache_path()})"}
    tagger = build_tagger(generation(cfg), DEFAULT_OPS)
    set_threads(threads)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads or None):  # the BLAS pool the workers will have
        info = choose_ops(tagger)
    store_choice(key, info)
    return {**info, "chosen_by": "--tagging-ops auto", "measured": "now"}


def run_setup(cfg: ShardsConfig, jobs: Sequence[ShardJob], threads: int, tagging: Dict[str, object]) -> RunSetup:
    """The setup of a run with shards to write, once its threads and tagging ops are chosen (and its
    settings recorded: the vocabulary of an ``--overwrite`` run is built again, never reused)."""
    kind = filler_kind(cfg)
    vocab = vocabulary(jobs, cfg, str(tagging["ops"])) if kind == "vocab" else None
    return RunSetup(threads=threads, tagging=tagging, filler=kind, generation=generation(cfg),
                    captions=caption_reader(cfg), chunk_size=cfg.chunk_size, masked_lm=masked_lm(cfg),
                    log_level=cfg.log_level, vocab=vocab)


def vocabulary(jobs: Sequence[ShardJob], cfg: ShardsConfig, ops: str) -> Dict[str, List[str]]:
    """--filler vocab: the vocabulary of a resumed run is reused (it decides the output), else built.
    A stored vocabulary without a word (written by an older version whose inputs could not be read) is
    never reused: built again when no shard was completed with it, else an error asking for --overwrite."""
    vocab_path = state_path(cfg.out, "vocab.json")
    if os.path.exists(vocab_path) and not cfg.overwrite:
        try:
            with open(vocab_path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError) as e:
            stored, why = None, f"unreadable ({e})"
        else:
            why = "empty"
        if vocab_words(stored):
            return stored
        done = [j for j in jobs if is_complete(cfg.out, j)]
        if done:
            raise UserError(f"{vocab_path}: the stored --filler vocab vocabulary is {why}, and {len(done)} shard(s) "
                            f"were completed with it (no att/act/obj negatives); rerun with --overwrite")
        log.warning("%s: the stored vocabulary is %s and no shard was completed with it: building it again",
                    vocab_path, why)
    vocab = build_vocab(jobs, caption_reader(cfg), build_tagger(generation(cfg), ops), cfg.vocab_captions,
                        cfg.vocab_per_tag)
    write_json_atomic(vocab_path, vocab)
    return vocab


def build_vocab(jobs: Sequence[ShardJob], reader: CaptionReader, tagger: SpacyTagger, n_captions: int,
                per_tag: int) -> Dict[str, List[str]]:
    """--filler vocab: the ``per_tag`` most frequent words of each tag in the first ``n_captions`` captions
    (shard order). A vocabulary without a word (no shard readable, no caption found) is an error, never
    written: it would give every att/act/obj negative a placeholder, in this run and in every rerun that
    reuses it."""
    captions: List[str] = []
    unreadable: List[str] = []
    refused: Dict[str, int] = {}  # samples without a usable caption, by problem kind
    for job in jobs:
        if len(captions) >= n_captions:
            break
        try:
            for key, members in read_samples(job.src):
                if key is None:
                    continue
                by_ext: Dict[str, bytes] = {}
                for m in members:
                    ext = member_ext(m)
                    if ext is not None:
                        by_ext.setdefault(ext, m.data)
                text, problem = reader.read(by_ext, tagger)
                if text is not None:
                    captions.append(text)
                    if len(captions) >= n_captions:
                        break
                else:
                    refused[problem] = refused.get(problem, 0) + 1
        except (ShardFormatError, OSError) as e:
            log.warning("vocabulary: skipping %s (%s)", job.src, e)
            unreadable.append(job.src)
    vocab = VocabFiller.from_captions(tagger, captions, per_tag=per_tag).vocab
    if not vocab_words(vocab):
        if captions:
            why = f"no word occurs twice with one tag in the {len(captions)} caption(s) read"
        elif unreadable:
            why = f"no caption could be read ({len(unreadable)} shard(s) unreadable, first: {unreadable[0]})"
        elif set(refused) - {"no_caption"}:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(refused.items(), key=lambda kv: -kv[1]))
            why = f"no caption passed the checks ({kinds}: see --languages, --max-caption-chars, --caption-key)"
        else:
            why = f"the shards hold no caption (--caption-key {reader.key!r})"
        raise UserError(f"--filler vocab: the vocabulary is empty: {why}; nothing was written. Fix the inputs "
                        f"and rerun, or use --filler mlm (or --types rel, which needs no filler)")
    log.info("vocabulary filler: %d captions -> %s", len(captions),
             ", ".join(f"{t}:{len(w)}" for t, w in vocab.items()))
    return vocab


def vocab_words(vocab) -> int:
    """Words in a ``--filler vocab`` vocabulary (``{tag: [word, ...]}``); 0 for anything else."""
    if not isinstance(vocab, dict):
        return 0
    return sum(len(w) for w in vocab.values() if isinstance(w, list) and all(isinstance(x, str) for x in w))


# ----------------------------------------------------------------------------- the builders
_TAGGERS: Dict[Tuple[str, int], SpacyTagger] = {}


def build_tagger(gen: Generation, ops: str) -> SpacyTagger:
    """This process's spaCy tagger for ``gen`` on the tagging ops ``ops`` (loaded once: the tagging
    probe, the vocabulary and a worker in the same process share it)."""
    key = (gen.spacy_model, gen.tagger_batch)
    if key not in _TAGGERS:
        _TAGGERS.clear()
        _TAGGERS[key] = SpacyTagger(gen.spacy_model, batch_size=gen.tagger_batch)
    tagger = _TAGGERS[key]
    if tagger.ops != ops:
        tagger.set_ops(ops)
    return tagger


def set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def make_mlm_filler(lm: MaskedLM, device: str) -> MLMFiller:
    """The masked LM of one worker (``--device cpu``), in the worker (the GPU binding and the CPU test
    hook of :mod:`.devices` apply as for the GPU processes)."""
    bind_process_gpu(device)
    return MLMFiller(lm.model, device=filler_device(device), batch_size=lm.batch_size,
                     n_candidates=lm.n_candidates, half=lm.half)


def make_mlm_scorer(lm: MaskedLM, device: str):
    """The model side of a masked LM that serves other processes (a local GPU process, a Ray actor)."""
    from ..generation.mlm_model import MLMScorer
    from ..generation.mlm_tokens import MLMVocab, load_tokenizer

    bind_process_gpu(device)
    tok = load_tokenizer(lm.model)
    return MLMScorer(lm.model, MLMVocab(tok, lm.model), tok.pad_token_id if tok.pad_token_id is not None else 0,
                     tok.mask_token_id, device=filler_device(device), batch_size=lm.batch_size,
                     n_candidates=lm.n_candidates, half=lm.half)


def remote_filler(lm: MaskedLM, send, receive) -> RemoteMLMFiller:
    """The tokenizer side of a masked LM that runs in another process: ``send(batch)``, ``receive(handle)``."""
    return RemoteMLMFiller(lm.model, send, receive)


def build_generator(setup: RunSetup, filler=None, device: Optional[str] = None):
    """The negative generator of one worker (loads spaCy and the filler; may raise GenerationSetupError).
    ``filler``: one made elsewhere (a link to a masked LM in another process); ``device``: this worker's
    masked-LM device (default ``--device``)."""
    set_threads(setup.threads)
    gen = setup.generation
    tagger = build_tagger(gen, setup.ops)
    if filler is None and setup.filler == "vocab":
        filler = VocabFiller(setup.vocab or {})
    elif filler is None and setup.masked_lm is not None:
        filler = make_mlm_filler(setup.masked_lm, device or setup.masked_lm.device)
    return NegativeGenerator(tagger, filler, seed=gen.seed, types=gen.types, top_k=gen.top_k)
