import pytest
import torch

from openclip_ce.training.data import (
    PLACEHOLDER_TOKEN, NegativesError, NegativesTokenizer, attach_negatives, decode_bundle,
)
from openclip_ce.training.packing import layout_text_batch
from openclip_ce.negatives import NegativesFormatError, decode_negatives, encode_negatives, parse_neg_types


def toy_tokenizer(texts, context_length=6):
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [sum(map(ord, w)) % 997 + 1 for w in t.split()][:context_length]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def test_attach_then_tokenize_round_trip():
    negs = {"rel": "a dog bites a man", "att": None, "act": "a man feeds a dog", "obj": None}
    samples = [{"__key__": "k1", "__url__": "s.tar", "txt": "a man bites a dog".encode(), "jpg": b"J",
                "neg.json": encode_negatives(negs)}]
    out = list(attach_negatives(samples))
    assert set(out[0]) == {"__key__", "__url__", "txt", "jpg"}  # neg.json folded into txt, rest untouched
    assert out[0]["jpg"] == b"J"
    caption, got = decode_bundle(out[0]["txt"].decode())
    assert caption == "a man bites a dog" and got == negs

    tok = NegativesTokenizer(toy_tokenizer)(out[0]["txt"].decode())
    assert tok.shape == (1, 5, 6)
    assert torch.equal(tok[0, 0], toy_tokenizer(["a man bites a dog"])[0])
    assert torch.equal(tok[0, 1], toy_tokenizer(["a dog bites a man"])[0])   # rel
    assert (tok[0, 2] == PLACEHOLDER_TOKEN).all()                            # att placeholder
    assert torch.equal(tok[0, 3], toy_tokenizer(["a man feeds a dog"])[0])   # act
    assert (tok[0, 4] == PLACEHOLDER_TOKEN).all()
    laid = layout_text_batch(tok, None)  # one caption per row: the positive and the two valid negatives
    assert laid.valid.tolist() == [[True, False, True, False]]
    assert torch.equal(laid.tokens, tok[0, [0, 1, 3]]) and laid.index.tolist() == [[0, 1, 0, 2, 0]]


def test_subset_of_types_and_plain_caption():
    tok = NegativesTokenizer(toy_tokenizer, ("obj", "rel"))
    plain = tok("just a caption")
    assert plain.shape == (1, 3, 6) and (plain[0, 1:] == PLACEHOLDER_TOKEN).all()


def test_missing_and_malformed_negatives_lenient_and_strict():
    bad = [{"__key__": "a", "__url__": "x.tar", "txt": b"cap"},
           {"__key__": "b", "__url__": "x.tar", "txt": b"cap", "neg.json": b"[1, 2]"}]
    out = list(attach_negatives([dict(s) for s in bad]))
    assert [decode_bundle(s["txt"].decode())[1] for s in out] == [{t: None for t in ("rel", "att", "act", "obj")}] * 2
    with pytest.raises(NegativesError, match=r"shard x.tar key a: missing neg.json"):
        list(attach_negatives([dict(bad[0])], strict=True))
    with pytest.raises(NegativesError, match=r"shard x.tar key b: malformed neg.json: expected a JSON object"):
        list(attach_negatives([dict(bad[1])], strict=True))


def test_non_utf8_caption_and_missing_caption_pass_through_untouched():
    s = {"__key__": "c", "__url__": "x.tar", "txt": b"\xff\xfe", "neg.json": encode_negatives({"rel": "x"})}
    assert list(attach_negatives([dict(s)]))[0]["txt"] == b"\xff\xfe"
    s2 = {"__key__": "d", "__url__": "x.tar", "jpg": b"J"}
    assert list(attach_negatives([dict(s2)])) == [s2]


def test_negatives_format_validation():
    assert decode_negatives(b'{"rel": "x", "obj": "  "}') == {"rel": "x", "att": None, "act": None, "obj": None}
    for bad, msg in [(b'{"rel": 1}', "must be a string or null"), (b'{"rel": "x", "foo": "y"}', "unknown"),
                     (b"\xff", "not valid UTF-8 JSON"), (b'"x"', "expected a JSON object")]:
        with pytest.raises(NegativesFormatError, match=msg):
            decode_negatives(bad)
    assert parse_neg_types("obj, rel") == ("rel", "obj")
    with pytest.raises(ValueError):
        parse_neg_types("rel,foo")


def test_negative_identical_to_caption_after_truncation_is_a_placeholder():
    caption = "a man rides a horse near a red barn and a dog"          # the edit is after token 6
    negs = {"rel": "a man rides a horse near a red dog and a barn", "att": "a tall man rides a horse"}
    tok = NegativesTokenizer(toy_tokenizer, ("rel", "att"))
    out = tok.tokenize_one(caption, negs)
    assert (out[1] == PLACEHOLDER_TOKEN).all()                            # truncated to the same tokens
    assert not (out[2] == PLACEHOLDER_TOKEN).all() and not torch.equal(out[2], out[0])
