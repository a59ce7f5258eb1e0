"""Byte-level BPE tokenization (RoBERTa, GPT-2 family) of plain-ASCII captions from a cache of pieces:
the same ids and character offsets as the ``tokenizers`` backend, at a fraction of its cost per caption.

Why it is exact: such a tokenizer (no normalizer, a ``ByteLevel`` pre-tokenizer with GPT-2's regex,
no prefix space) cuts the text into pieces with one regular expression, the pieces tile the text, and
BPE tokenizes every piece on its own; the offsets are trimmed of spaces token by token. So a caption's
tokens are its pieces' tokens, each piece's offsets shifted by where the piece starts, and a piece's
tokens can be computed once (by the backend itself) and reused. On ASCII text, GPT-2's ``\\p{L}``,
``\\p{N}`` and ``\\s`` are ``[A-Za-z]``, ``[0-9]`` and ``[\\t\\n\\v\\f\\r ]``, which Python's ``re`` has.

What is not plain ASCII (any other character, control characters, the text of an added token such as
``<mask>``) goes to the backend. :func:`for_tokenizer` returns ``None`` (backend only) for any other
tokenizer, or when a self-check against the backend on sample captions fails; ``tests/generation/test_generate.py``
compares both on captions full of edge cases.
"""

from __future__ import annotations

import json
import logging
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

_W = r"\t\n\x0b\x0c\r "
# GPT-2's pre-tokenizer regex, for ASCII text
_PIECES = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_W}A-Za-z0-9]+|[{_W}]+(?![^{_W}])|[{_W}]+")
_SELF_CHECK = ["A gray cat sits on top of a wooden chair.", "  two  dogs\tand a cat\n", "Don't stop: it's 12:30pm!!",
               "a\n\n b", "x  ", "   ", "A ... b -- c", "we've they'll I'm 'S", "tab\t\tx", "a\x0bb\x0cc\rd",
               "mix3d w0rds 123abc", "end. ", "t-shirts, o'clock & rock'n'roll"]


class BytePieces:
    """``tokenize(texts) -> (ids, starts, ends, lengths) or None`` for the texts it can do (see module)."""

    MAX_PIECES = 500_000  # cached pieces; beyond, the cache starts over (memory stays bounded)

    def __init__(self, backend, added: Sequence[str]):
        self.backend = backend
        unsafe = "[^\x09-\x0d\x20-\x7e]" + "".join("|" + re.escape(a) for a in added if a)
        self._unsafe = re.compile(unsafe)
        self._reset()

    def _reset(self) -> None:
        self._index = {}  # piece -> its row in the table, or -1 when it must go to the backend
        self._off = np.zeros(1024, dtype=np.int64)    # per piece: first token in the flat arrays
        self._cnt = np.zeros(1024, dtype=np.int64)    # per piece: number of tokens
        self._ids = np.zeros(4096, dtype=np.int64)    # flat, per token: id, start and end in its piece
        self._a = np.zeros(4096, dtype=np.int64)
        self._b = np.zeros(4096, dtype=np.int64)
        self._n_pieces = self._n_tokens = 0

    def _add(self, piece: str) -> int:
        """Tokenize one new piece with the backend; its row, or -1 if it is not a piece on its own."""
        split = self.backend.pre_tokenizer.pre_tokenize_str(piece)  # (byte-level text, offsets) per piece
        if len(split) != 1 or split[0][1] != (0, len(piece)):
            self._index[piece] = -1
            return -1
        enc = self.backend.encode(piece, add_special_tokens=False)
        n, t = len(enc.ids), self._n_tokens
        if t + n > len(self._ids):
            size = 2 * (t + n)
            self._ids, self._a, self._b = (np.resize(x, size) for x in (self._ids, self._a, self._b))
        if self._n_pieces == len(self._off):
            self._off, self._cnt = np.resize(self._off, 2 * len(self._off)), np.resize(self._cnt, 2 * len(self._cnt))
        self._ids[t:t + n] = enc.ids
        if n:
            offs = np.asarray(enc.offsets, dtype=np.int64)
            self._a[t:t + n], self._b[t:t + n] = offs[:, 0], offs[:, 1]
        row = self._n_pieces
        self._off[row], self._cnt[row] = t, n
        self._n_pieces, self._n_tokens = row + 1, t + n
        self._index[piece] = row
        return row

    def tokenize(self, texts: Sequence[str]) -> Tuple[np.ndarray, ...]:
        """``(done, ids, starts, ends, lengths)``: ``done`` (bool per text) says which texts were tokenized
        here; the arrays hold their tokens, concatenated in text order (``lengths``: per done text)."""
        if len(self._index) > self.MAX_PIECES:
            self._reset()
        unsafe = self._unsafe.search
        done = np.fromiter((not unsafe(t) for t in texts), bool, len(texts))
        pieces: List[str] = []
        n_pieces = []
        for t, ok in zip(texts, done.tolist()):
            if ok:
                p = _PIECES.findall(t)
                pieces += p
                n_pieces.append(len(p))
        get, add = self._index.get, self._add
        rows = np.fromiter(((r if (r := get(p)) is not None else add(p)) for p in pieces), np.int64, len(pieces))
        plen = np.fromiter(map(len, pieces), np.int64, len(pieces))
        n_pieces = np.asarray(n_pieces, dtype=np.int64)
        text_of = np.repeat(np.arange(len(n_pieces)), n_pieces)
        if (rows < 0).any():  # a text with a piece that is not one on its own: the backend does it
            bad = np.unique(text_of[rows < 0])
            keep = ~np.isin(text_of, bad)
            done[np.flatnonzero(done)[bad]] = False
            n_pieces = np.delete(n_pieces, bad)
            rows, plen, text_of = rows[keep], plen[keep], np.repeat(np.arange(len(n_pieces)), n_pieces)
        # where each piece starts in its text: the pieces tile the text
        ends = np.cumsum(plen)
        first = np.cumsum(n_pieces) - n_pieces
        text_base = np.concatenate([[0], ends])[first]
        piece_start = ends - plen - np.repeat(text_base, n_pieces)
        cnt = self._cnt[rows]
        total = int(cnt.sum())
        tok = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt - self._off[rows], cnt)
        shift = np.repeat(piece_start, cnt)
        lengths = np.bincount(text_of, weights=cnt, minlength=len(n_pieces)).astype(np.int64)
        return done, self._ids[tok], shift + self._a[tok], shift + self._b[tok], lengths


def for_tokenizer(backend) -> Optional[BytePieces]:
    """A :class:`BytePieces` for this ``tokenizers`` backend when it is a plain byte-level BPE whose results
    it reproduces on the self-check captions; ``None`` otherwise (then the backend does everything)."""
    try:
        cfg = json.loads(backend.to_str())
    except Exception:  # noqa: BLE001 - a backend that cannot describe itself: not ours to shortcut
        return None
    pre, model, post = cfg.get("pre_tokenizer") or {}, cfg.get("model") or {}, cfg.get("post_processor") or {}
    if (cfg.get("normalizer") is not None or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space")
            or not pre.get("use_regex", True) or model.get("type") != "BPE" or model.get("dropout")
            or post.get("type") not in (None, "RobertaProcessing", "ByteLevel") or post.get("add_prefix_space")):
        return None
    added = [a["content"] for a in cfg.get("added_tokens") or []]
    pieces = BytePieces(backend, added)
    done, ids, a, b, lengths = pieces.tokenize(_SELF_CHECK)
    encs = backend.encode_batch(_SELF_CHECK, add_special_tokens=False)
    want_ids = [i for e in encs for i in e.ids]
    want_offs = [o for e in encs for o in e.offsets]
    if not done.all() or ids.tolist() != want_ids or list(zip(a.tolist(), b.tolist())) != want_offs:
        log.warning("byte-level BPE shortcut disabled: it differs from the tokenizer on its self-check")
        return None
    pieces._reset()
    return pieces
