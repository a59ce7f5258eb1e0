"""The training data stage: hard negatives from shards (``neg.json``) or csv columns to token tensors.

Plain torch + webdataset; nothing here knows open_clip. The pieces compose like webdataset stages:

* :func:`attach_negatives` - a generator stage over raw webdataset samples (``{"__key__", "__url__",
  "txt": bytes, "neg.json": bytes, ...}``). It validates ``neg.json`` and folds caption and negatives
  into the caption member as one *bundle* (see :func:`encode_bundle`), so that they travel together
  through any downstream decode / rename / map / to_tuple stages that only keep the caption. On the
  way it drops members webdataset's decoders would unpickle (:mod:`openclip_ce.pickled`), refuses a
  ``neg.json`` that may belong to another caption (a repeated key), and counts negatives that do not
  look like edits of their caption (:func:`sanity_issues`; kept, only reported).
* :class:`NegativesTokenizer` - wraps a text tokenizer. Given a bundle it returns ``[1, 1 + K, L]``
  tokens (positive first, then one row per negative type, placeholder rows filled with
  :data:`PLACEHOLDER_TOKEN`); given a plain caption it returns all-placeholder negatives.
* :class:`NegativesCsvDataset` - a map-style dataset for csv/tsv files with ``neg_<type>`` columns.

Tokenisation happens inside the data workers, with the model's own tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from ..contract import StopTraining
from ..pickled import is_pickled
from .packing import PLACEHOLDER_TOKEN
from ..negatives import (
    NEG_MEMBER,
    NEG_TYPES,
    Negatives,
    NegativesFormatError,
    decode_negatives,
    empty_negatives,
)

log = logging.getLogger(__name__)

_BUNDLE_PREFIX = "\x00openclip-ce-bundle\x00"  # NUL never occurs in a decoded caption


class NegativesError(StopTraining, ValueError):
    """A sample whose negatives are missing or malformed, under ``--ce-strict``: the run stops with one
    line naming the shard and key (also when raised in a DataLoader worker, whose re-raise in the main
    process wraps the message in the worker's traceback: :meth:`one_line` takes the message back out)."""

    def one_line(self) -> str:
        text = str(self)
        if "Original Traceback" in text:  # torch's ExceptionWrapper: "Caught ... Original Traceback ...\nX: msg"
            last = [l for l in text.splitlines() if l.strip()][-1]
            text = last.split(f"{type(self).__name__}: ", 1)[-1]
        return " ".join(text.split()) or type(self).__name__


# ----------------------------------------------------------------------------- bundles
def encode_bundle(caption: str, negatives: Optional[Negatives]) -> str:
    return _BUNDLE_PREFIX + json.dumps({"caption": caption, "neg": negatives}, ensure_ascii=False)


def decode_bundle(text: str) -> Tuple[str, Optional[Negatives]]:
    """``(caption, negatives)``; a plain caption (not a bundle) gives ``(caption, None)``."""
    if not text.startswith(_BUNDLE_PREFIX):
        return text, None
    obj = json.loads(text[len(_BUNDLE_PREFIX):])
    return obj["caption"], obj["neg"]


# ----------------------------------------------------------------------------- problems
class NegativesProblemCounter:
    """Counts samples whose negatives were unusable, logging the first few and then every power of two
    from 16 on (and every 100,000th). ``verdict`` says what happened to such a sample.

    Lives in each data worker; each worker logs its own counts.
    """

    def __init__(self, first: int = 5, verdict: str = "counted as all-placeholder negatives",
                 noun: str = "such samples"):
        self.first = first
        self.verdict, self.noun = verdict, noun
        self.counts: Dict[str, int] = {}
        self.total = 0

    def report(self, where: str, kind: str, detail: str) -> None:
        self.total += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        n = self.total
        if n <= self.first or (n & (n - 1) == 0 and n >= 16) or n % 100000 == 0:
            log.warning(
                "ce_clip: %s: %s (%s); %s [%d %s so far in this data worker (pid %d): %s]",
                where, kind, detail, self.verdict, n, self.noun, os.getpid(),
                ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())),
            )


_COUNTER = NegativesProblemCounter()
_PICKLED = NegativesProblemCounter(verdict="dropped before open_clip's decoder (it would unpickle it: code from "
                                           "the data)", noun="members dropped")
_SANITY = NegativesProblemCounter(verdict="kept (a hand-made neg.json? check how it was made)",
                                  noun="samples with such negatives")


def _printable(text: object) -> str:
    """``text`` safe for any log stream: tar names decoded with surrogateescape carry lone surrogates."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _sample_where(sample: dict) -> str:
    return f"shard {_printable(sample.get('__url__', '?'))} key {_printable(sample.get('__key__', '?'))}"


def read_sample_negatives(sample: dict, strict: bool, counter: NegativesProblemCounter = _COUNTER,
                          member: str = NEG_MEMBER) -> Negatives:
    """The validated negatives of a raw webdataset sample, or all placeholders (reported)."""
    raw = sample.get(member)
    problem = None
    if raw is None:
        problem = ("missing neg.json", f"sample has members {sorted(k for k in sample if not k.startswith('__'))}")
    else:
        try:
            return decode_negatives(raw)
        except NegativesFormatError as e:
            problem = ("malformed neg.json", str(e))
    return _refuse(sample, strict, *problem, counter=counter)


def drop_pickled_members(sample: dict, counter: NegativesProblemCounter = _PICKLED) -> None:
    """Remove (and report) the members webdataset's default decoders would unpickle (``.pyd``,
    ``.pickle``, ``.pth``, also ``.gz``-wrapped): open_clip decodes every member of a sample, also those
    it then throws away, so such a member in a downloaded shard would run code in the data worker."""
    for ext in [k for k in sample if not k.startswith("__") and is_pickled(k)]:
        del sample[ext]
        counter.report(_sample_where(sample), "pickled member", f".{_printable(ext)}")


def attach_negatives(samples: Iterable[dict], strict: bool = False, caption_key: str = "txt",
                     member: str = NEG_MEMBER) -> Iterator[dict]:
    """Webdataset stage: fold ``neg.json`` into the caption member as a bundle (bytes in, bytes out).

    ``caption_key`` may list alternatives, ``"txt;caption"`` (open_clip 4's ``--text-key``): the first
    one the sample has is the caption, as the trainer's own ``rename`` picks it. Samples without a
    caption are passed through untouched (the trainer's own filter drops them); a caption that is not
    UTF-8 is passed through untouched too, for the trainer's decoder to report, and an empty one
    (without its negatives), for the trainer's empty-caption filter.

    It runs right after the tar reader (file order). A sample with the key of the sample before it
    was split from it by a repeated extension (``k.jpg k.txt k.jpg k.txt``); when only the second
    has a ``neg.json`` (what make-shards before this check wrote: one ``neg.json`` after both, made from
    the first caption), that ``neg.json`` may belong to the other caption: it is refused like a malformed
    one. Members that would be unpickled are dropped from every sample (:func:`drop_pickled_members`).
    """
    keys = [k.strip() for k in caption_key.split(";") if k.strip()]
    previous = (None, None, True)  # (url, key, had neg.json) of the sample before
    for sample in samples:
        drop_pickled_members(sample)
        here = (sample.get("__url__"), sample.get("__key__"))
        repeated = here == previous[:2] and not previous[2] and member in sample
        previous = (*here, member in sample)
        key = next((k for k in keys if k in sample), None)
        caption = None if key is None else sample[key]
        if caption is None:
            yield sample
            continue
        if repeated:
            negatives = _refuse(sample, strict, "neg.json of a repeated key",
                                "the sample before has the same key and no neg.json: this one may have been made "
                                "from the other caption; rerun make-shards on this shard")
        else:
            negatives = read_sample_negatives(sample, strict, member=member)
        sample.pop(member, None)
        try:
            text = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
        except UnicodeDecodeError:
            yield sample
            continue
        if not text.strip():  # left as it is: a trainer that drops empty captions (open_clip 4) still sees one
            yield sample
            continue
        issues = sanity_issues(text, negatives)
        if issues:
            _SANITY.report(_sample_where(sample), "suspicious negatives", "; ".join(issues))
        sample[key] = encode_bundle(text, negatives).encode("utf-8")
        yield sample


def _refuse(sample: dict, strict: bool, kind: str, detail: str,
            counter: NegativesProblemCounter = _COUNTER) -> Negatives:
    where = _sample_where(sample)
    if strict:
        raise NegativesError(f"{where}: {kind}: {detail} (--ce-strict)")
    counter.report(where, kind, detail)
    return empty_negatives()


# ----------------------------------------------------------------------------- sanity
LONGER_FACTOR, LONGER_SLACK = 2, 20  # a negative longer than 2 * caption + 20 characters is "much longer"
_WORD = re.compile(r"\w+")


def _scripts(text: str) -> set:
    """Scripts of the letters of ``text`` (first word of their Unicode name: LATIN, CYRILLIC, CJK, ...),
    plus SYMBOL for pictographs and emoji; an ASCII text costs one check."""
    if text.isascii():
        return {"LATIN"} if any(c.isalpha() for c in text) else set()
    out = set()
    for c in text:
        if c.isalpha():
            out.add(unicodedata.name(c, "UNKNOWN ?").split(" ", 1)[0])
        elif unicodedata.category(c) == "So":
            out.add("SYMBOL")
    return out


def sanity_issues(caption: str, negatives: Negatives) -> List[str]:
    """What makes these negatives unlike the edits make-shards writes (one word swapped or replaced):
    a negative equal to its caption, much longer than it, in a script (or with emoji) the caption does
    not use, or sharing no word with it. Empty for make-shards' own output; a warning, not a rejection."""
    issues = []
    caption_words = caption_scripts = None
    for t, neg in negatives.items():
        if neg is None:
            continue
        if neg.strip() == caption.strip():
            issues.append(f"{t} equals the caption")
            continue
        if len(neg) > LONGER_FACTOR * len(caption) + LONGER_SLACK:
            issues.append(f"{t} has {len(neg)} characters for a caption of {len(caption)}")
        if caption_scripts is None:
            caption_scripts = _scripts(caption)
        other = _scripts(neg) - caption_scripts
        if other:
            issues.append(f"{t} uses {'/'.join(sorted(other))} characters, the caption does not")
        if caption_words is None:
            caption_words = set(_WORD.findall(caption.casefold()))
        if len(caption_words) > 1 and not caption_words & set(_WORD.findall(neg.casefold())):
            issues.append(f"{t} shares no word with the caption")
    return issues


# ----------------------------------------------------------------------------- tokenisation
class NegativesTokenizer:
    """Tokenize a caption and its negatives: ``tok(bundle)`` -> ``LongTensor[1, 1 + K, L]``.

    ``neg_types`` selects (and orders) the K negative types delivered; rows of placeholder
    negatives are filled with :data:`PLACEHOLDER_TOKEN`, and so are negatives whose tokens equal the
    caption's (an edit beyond the context length, lost to truncation). Calling it with a list of texts returns
    ``[N, 1 + K, L]``. Picklable when the wrapped tokenizer is.
    """

    def __init__(self, tokenizer: Callable, neg_types: Sequence[str] = NEG_TYPES):
        self.tokenizer = tokenizer
        self.neg_types = tuple(neg_types)

    def tokenize_one(self, caption: str, negatives: Optional[Negatives]) -> torch.Tensor:
        negatives = negatives or {}
        texts = [caption]
        slots = []
        for i, t in enumerate(self.neg_types):
            if negatives.get(t):
                slots.append(i)
                texts.append(negatives[t])
        tokens = self.tokenizer(texts)
        out = torch.full((1 + len(self.neg_types), tokens.shape[-1]), PLACEHOLDER_TOKEN, dtype=torch.long)
        out[0] = tokens[0]
        for row, i in enumerate(slots, start=1):
            # an edit past the context length vanishes on truncation: the "negative" would be the
            # positive itself, so it is a placeholder
            if not torch.equal(tokens[row], tokens[0]):
                out[1 + i] = tokens[row]
        return out

    def __call__(self, texts) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return torch.stack([self.tokenize_one(*decode_bundle(t)) for t in texts])


# ----------------------------------------------------------------------------- csv
class NegativesCsvDataset(torch.utils.data.Dataset):
    """csv/tsv rows ``image path, caption, neg_rel, neg_att, neg_act, neg_obj`` -> ``(image, tokens)``.

    The constructor of open_clip's ``CsvDataset`` plus ``neg_types``. open_clip 4's ``CsvDataset`` also
    takes ``variable_text`` and yields dict samples: given ``variable_text`` (only False: the text
    batches must have a fixed length), the samples are ``{"image": image, "text": tokens}``. An empty
    cell is a placeholder. Missing ``neg_*`` columns are an error naming the file and the columns.
    """

    def __init__(self, input_filename, transforms, img_key, caption_key, sep="\t", tokenizer=None,
                 neg_types: Sequence[str] = NEG_TYPES, variable_text: Optional[bool] = None):
        import pandas as pd  # only csv runs need pandas

        if variable_text:
            raise NegativesError("--loss ce_clip needs fixed-length text batches; this model's text tower takes "
                                 "variable-length ones (variable_text)")
        self.dict_samples = variable_text is not None

        df = pd.read_csv(input_filename, sep=sep, keep_default_na=False, dtype=str)
        wanted = [img_key, caption_key] + [f"neg_{t}" for t in neg_types]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise NegativesError(
                f"{input_filename}: missing column(s) {missing} (has {list(df.columns)}); "
                f"--loss ce_clip with --dataset-type csv needs neg_<type> columns, empty cell = placeholder"
            )
        self.input_filename = input_filename
        self.images = df[img_key].tolist()
        self.captions = df[caption_key].tolist()
        self.negatives = [
            {t: (v if v.strip() else None) for t, v in zip(neg_types, row)}
            for row in zip(*(df[f"neg_{t}"].tolist() for t in neg_types))
        ] if neg_types else [{} for _ in self.captions]
        self.transforms = transforms
        self.tokenize = NegativesTokenizer(tokenizer, neg_types)

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, idx):
        image = self.transforms(Image.open(str(self.images[idx])))
        tokens = self.tokenize.tokenize_one(str(self.captions[idx]), self.negatives[idx])
        return {"image": image, "text": tokens} if self.dict_samples else (image, tokens)
