"""A tiny masked LM (RoBERTa layout) and its byte-level BPE tokenizer, built locally: for tests and the
``make-shards`` benchmark, where hub downloads are not available. Nothing here downloads.

``write_tiny_mlm_dir(path, favour=[...])`` writes a directory that ``--filler-model`` accepts. With
``favour``, the LM-head bias makes those words the top predictions in that order at every masked
position, whatever the (random) rest of the model computes: fills become known answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence

from ..generation.probe_captions import PROBE_CAPTIONS

# the tagging-ops probe's captions double as the tiny tokenizer's corpus and the tests' data
SAMPLE_CAPTIONS: List[str] = list(PROBE_CAPTIONS)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tokenizer(corpus: Iterable[str] = SAMPLE_CAPTIONS, vocab_size: int = 2000, extra_words: Sequence[str] = ()):
    """A byte-level BPE tokenizer trained on ``corpus`` (words of ``extra_words`` become single tokens,
    both with and without the leading-space marker), wrapped as a ``transformers`` RoBERTa tokenizer."""
    from tokenizers import AddedToken, ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    texts = list(corpus)
    for w in extra_words:  # frequent enough to be merged into whole-word tokens
        texts += [f"{w} {w} {w}"] * 8
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    bpe.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True)])
    return RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token=AddedToken("<mask>", lstrip=True, rstrip=False),
    )


def token_id(tokenizer, piece: str) -> int:
    """Id of one vocabulary piece (``"Ġwooden"``); KeyError when the piece is not a single token."""
    i = tokenizer.convert_tokens_to_ids(piece)
    if i is None or i == tokenizer.unk_token_id:
        raise KeyError(f"{piece!r} is not a single token of this tokenizer")
    return i


def write_tiny_mlm_dir(path: str | os.PathLike, favour: Sequence[str] = (), corpus: Iterable[str] = SAMPLE_CAPTIONS,
                       hidden: int = 32, layers: int = 1, heads: int = 2, vocab_size: int = 2000,
                       max_positions: int = 130, seed: int = 0, model_vocab_size: int = 0) -> str:
    """Write a RoBERTa masked LM + tokenizer to ``path``; return ``str(path)``.

    ``favour``: vocabulary pieces (``"Ġplastic"``, ``"Plastic"``, ``","``...) that get LM-head biases
    100, 90, 80... so that they are the predictions in that order at every masked position. Words
    with the leading-space marker or a capital are added to the tokenizer's training text so that
    they are single tokens; other pieces (``","``, the fragment ``"ing"``) must occur in ``corpus``.
    ``model_vocab_size``: embedding / output rows of the model when larger than the tokenizer's
    vocabulary, for a model of a real one's size (distilroberta-base: 50265) in speed and memory checks;
    the extra rows are never produced by the tokenizer.
    """
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    # whole words among the favoured pieces become single tokens; other pieces ("ing", ",") must already be
    words = sorted({p.lstrip("Ġ") for p in favour if p.lstrip("Ġ").isalpha() and (p[0] == "Ġ" or p[0].isupper())})
    tok = build_tokenizer(corpus, vocab_size, extra_words=words)
    torch.manual_seed(seed)
    cfg = RobertaConfig(
        vocab_size=max(len(tok), model_vocab_size), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=max_positions, type_vocab_size=1,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    model = RobertaForMaskedLM(cfg)
    with torch.no_grad():
        for rank, piece in enumerate(favour):
            model.lm_head.bias[token_id(tok, piece)] = 100.0 - 10.0 * rank
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(path))
    model.save_pretrained(str(path))
    return str(path)
