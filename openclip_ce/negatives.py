"""The hard-negatives format shared by ``openclip-ce make-shards`` and the training data stage.

Every sample of a shard carries, next to its image and caption, a member ``neg.json``::

    {"rel": str | null, "att": str | null, "act": str | null, "obj": str | null}

``null`` is the placeholder: no negative of that type could be made, and the loss ignores it.
The csv layout uses columns ``neg_rel, neg_att, neg_act, neg_obj`` (empty cell = placeholder).
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Sequence, Tuple

from .errors import UserError

NEG_TYPES: Tuple[str, ...] = ("rel", "att", "act", "obj")
NEG_MEMBER = "neg.json"          # tar member suffix (webdataset key "neg.json")

Negatives = Dict[str, Optional[str]]


class NegativesFormatError(UserError, ValueError):
    """A ``neg.json`` (or csv row) that does not follow the format above."""


def parse_neg_types(spec: str | Sequence[str]) -> Tuple[str, ...]:
    """``"rel,obj"`` -> ``("rel", "obj")`` in canonical order; unknown names are an error."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in NEG_TYPES]
    if unknown or not names:
        raise ValueError(
            f"--ce-neg-types: expected a non-empty comma-separated subset of {','.join(NEG_TYPES)}, got {spec!r}"
        )
    return tuple(t for t in NEG_TYPES if t in names)


def validate_negatives(obj: object) -> Negatives:
    """Check a decoded ``neg.json`` object; return it with every type present (missing -> None)."""
    if not isinstance(obj, dict):
        raise NegativesFormatError(f"expected a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - set(NEG_TYPES))
    if extra:
        raise NegativesFormatError(f"unknown negative type(s) {extra}; allowed {list(NEG_TYPES)}")
    out: Negatives = {}
    for t in NEG_TYPES:
        v = obj.get(t)
        if v is not None and not isinstance(v, str):
            raise NegativesFormatError(f"{t!r} must be a string or null, got {type(v).__name__}")
        if v is not None and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:  # JSON's "\ud800" escape: no character, no tokenizer takes it
                raise NegativesFormatError(f"{t!r} holds a lone surrogate {v[e.start]!r} at position {e.start} "
                                           f"(an escaped UTF-16 half without its pair)") from None
        out[t] = v if (v is not None and v.strip()) else None
    return out


def decode_negatives(data: bytes | str) -> Negatives:
    """Decode the raw bytes of a ``neg.json`` member; raises :class:`NegativesFormatError`."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NegativesFormatError(f"not valid UTF-8 JSON ({e})") from e
    except RecursionError:  # thousands of nested brackets: the parser's depth limit, not a crash
        raise NegativesFormatError("JSON nested too deeply (expected a flat object)") from None
    return validate_negatives(obj)


def encode_negatives(negs: Negatives) -> bytes:
    """Canonical bytes of a ``neg.json`` member (keys in :data:`NEG_TYPES` order)."""
    negs = validate_negatives(negs)
    return json.dumps({t: negs[t] for t in NEG_TYPES}, ensure_ascii=False).encode("utf-8")


def empty_negatives() -> Negatives:
    return {t: None for t in NEG_TYPES}
