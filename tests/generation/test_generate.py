"""Negative generation on captions whose answers are known (tiny MLMs with biased LM heads)."""

import random
import re

import pytest
import torch

from openclip_ce.generation.edits import FillRequest, choose_fill
from openclip_ce.generation.fillers import MLMFiller, VocabFiller
from openclip_ce.generation.generator import NegativeGenerator
from openclip_ce.generation.mlm_tokens import FillSlots
from openclip_ce.generation.tagging import SpacyTagger, Tok
from openclip_ce.generation.words import VariantCheck, crude_stem, sample_rng
from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, tiny_filler


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    return {
        # the original word first, then a case variant / punctuation / fragment, then the expected answer
        "att": tiny_filler(root, ["Ġwooden", "ĠWooden", ",", "ing", "Ġplastic", "Ġred"]),
        "act": tiny_filler(root, ["Ġrunning", "Ġruns", "Ġran", "ĠRunning", "Ġsleeping", "Ġjumps"]),
        "obj": tiny_filler(root, ["Ġcat", "Ġcats", "ĠCat", "Ġdog", "Ġbird"]),
        "initial": tiny_filler(root, ["Small", "ing", "Tiny", "Ġtiny"]),
        "random": tiny_filler(root, []),
    }


def gen_for(tagger, model, types, top_k=1, seed=0, **filler_kw):
    return NegativeGenerator(tagger, MLMFiller(model, **filler_kw), seed=seed, types=types, top_k=top_k)


def one(gen, caption, key="k"):
    return gen.generate([(key, caption)])[0]


# ----------------------------------------------------------------------------- rel
def test_rel_swaps_exactly_two_nouns_keeping_whitespace(tagger):
    gen = NegativeGenerator(tagger, None, types=("rel",))
    assert one(gen, "A dog chases a cat.") == {"rel": "A cat chases a dog.", "att": None, "act": None, "obj": None}
    # odd whitespace survives exactly; a noun inside another word is not touched (no str.replace)
    assert one(gen, "  The cat\tlooks at  a catalog ,quietly ")["rel"] == "  The catalog\tlooks at  a cat ,quietly "
    assert one(gen, "A catalog next to a cat")["rel"] == "A cat next to a catalog"


def test_rel_is_null_without_two_different_nouns(tagger):
    gen = NegativeGenerator(tagger, None, types=("rel",))
    assert one(gen, "The cat is sleeping.")["rel"] is None
    assert one(gen, "a dog and a dog")["rel"] is None  # the same noun twice: swapping changes nothing
    assert one(gen, "a dog and two dogs")["rel"] is None  # inflections of one noun are not different nouns
    assert one(gen, "one man and two men")["rel"] is None
    assert one(gen, "a tennis racket and a tennis ball")["rel"] == "a tennis ball and a tennis racket"
    assert one(gen, "running quickly")["rel"] is None


def test_rel_moves_compound_nouns_whole_and_recases_sentence_start(tagger):
    gen = NegativeGenerator(tagger, None, types=("rel",))
    assert one(gen, "A tennis racket next to a ball.")["rel"] == "A ball next to a tennis racket."
    assert one(gen, "Dogs chase the cat.")["rel"] == "Cat chase the dogs."


def test_rel_with_exactly_two_nouns_always_swaps_them(tagger):
    gen = NegativeGenerator(tagger, None, types=("rel",))
    for key in map(str, range(20)):  # whatever the per-key random stream
        assert one(gen, "A dog chases a cat.", key)["rel"] == "A cat chases a dog."


# ----------------------------------------------------------------------------- fills
def test_att_known_answer_skips_original_case_variant_punctuation_fragment(tagger, models):
    gen = gen_for(tagger, models["att"], ("att",))
    assert one(gen, "A wooden chair near the window.")["att"] == "A plastic chair near the window."
    # top_k=2: the pool is {plastic, red}; never wooden/Wooden/","/"ing" whatever the key
    gen2 = gen_for(tagger, models["att"], ("att",), top_k=2)
    outs = {one(gen2, "A wooden chair near the window.", str(k))["att"] for k in range(30)}
    assert outs == {"A plastic chair near the window.", "A red chair near the window."}


def test_act_known_answer_skips_inflection_variants(tagger, models):
    gen = gen_for(tagger, models["act"], ("act",))
    assert one(gen, "A dog running on the grass.")["act"] == "A dog sleeping on the grass."


def test_obj_known_answer_skips_plural_and_case_variants(tagger, models):
    gen = gen_for(tagger, models["obj"], ("obj",))
    assert one(gen, "The cat is sleeping.")["obj"] == "The dog is sleeping."


def test_sentence_initial_fill_is_recased_and_never_a_fragment(tagger, models):
    gen = gen_for(tagger, models["initial"], ("att",))
    assert one(gen, "Small dogs play in the park.")["att"] == "Tiny dogs play in the park."


def test_no_adjective_or_verb_gives_null_not_a_lone_mask_fill(tagger, models):
    gen = gen_for(tagger, models["random"], ("att", "act", "obj"), top_k=5)
    out = one(gen, "A cat.")
    assert out["att"] is None and out["act"] is None and out["obj"] not in (None, "A cat.")
    assert one(gen, "...")  == {"rel": None, "att": None, "act": None, "obj": None}


def test_choose_fill_rules(tagger):
    variants = VariantCheck(tagger.lemma)
    tok = Tok(2, 8, "VERB", "VBG", "run")
    rng = random.Random(0)
    cands = ["running", "Running", "runs", "ran", "run", "wom", "", "3d", "-", "Jumping", "jumping"]
    assert choose_fill(cands, "running", tok, rng, 1, True, variants, tagger.known) == "jumping"
    assert choose_fill(["runs", "ran"], "running", tok, rng, 5, True, variants, tagger.known) is None
    # unordered pool (vocab filler): any admissible word, never the original
    assert choose_fill(["running", "sitting"], "running", tok, rng, 5, False, variants, tagger.known) == "sitting"
    assert crude_stem("glasses") == crude_stem("glass") and crude_stem("running") == crude_stem("run")


# ----------------------------------------------------------------------------- determinism and batching
def test_output_independent_of_batch_size_and_chunking(tagger, models):
    items = [(f"key{i}", c) for i, c in enumerate(SAMPLE_CAPTIONS)]
    ref = gen_for(tagger, models["random"], ("rel", "att", "act", "obj"), top_k=5, batch_size=64).generate(items)
    one_by_one = gen_for(tagger, models["random"], ("rel", "att", "act", "obj"), top_k=5, batch_size=1)
    chunked = [n for i in range(0, len(items), 7) for n in one_by_one.generate(items[i:i + 7])]
    assert chunked == ref
    assert sum(v is not None for n in ref for v in n.values()) > 2 * len(items)  # most types were made
    for (_, c), n in zip(items, ref):
        for v in n.values():
            assert v is None or (v != c and "<mask>" not in v)


def test_seed_and_key_decide_the_output(tagger, models):
    items = [(f"key{i}", c) for i, c in enumerate(SAMPLE_CAPTIONS)]
    a = gen_for(tagger, models["random"], ("att", "obj"), top_k=8, seed=1).generate(items)
    b = gen_for(tagger, models["random"], ("att", "obj"), top_k=8, seed=1).generate(items)
    c = gen_for(tagger, models["random"], ("att", "obj"), top_k=8, seed=2).generate(items)
    assert a == b and a != c
    assert sample_rng(1, "k", "att").random() == sample_rng(1, "k", "att").random()
    assert sample_rng(1, "k", "att").random() != sample_rng(1, "k", "obj").random()


def _encode(filler, requests):
    return filler.encoder.sequences(filler.encoder.encode(FillSlots.from_requests(requests)))


def test_masked_position_projection_equals_full_model_logits(models):
    filler = MLMFiller(models["random"])
    reqs = [FillRequest("A ", " chair near the window.", "ADJ", "JJ", "wooden"),
            FillRequest("", " dogs play.", "ADJ", "JJ", "Small"), FillRequest("The cat is ", ".", "VERB", "VBG", "sleeping")]
    seqs = _encode(filler, reqs)
    width = max(map(len, seqs))
    ids = torch.tensor([s + [filler.tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    at = (ids == filler.tokenizer.mask_token_id).int().argmax(1)
    with torch.no_grad():
        fast = filler.scorer.scores(ids, att, at)
        full = filler.model(input_ids=ids, attention_mask=att).logits[torch.arange(3), at][:, filler.vocab.union]
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    # the mask sits where the word was, between the tokens of the left and right context
    tok = filler.tokenizer
    assert tok.decode(seqs[0], skip_special_tokens=False).replace("<s>", "").replace("</s>", "") == \
        "A<mask> chair near the window."
    # the answer is the model's own top-k over the admissible columns, best first
    cols = filler.collect(filler.submit(FillSlots.from_requests(reqs)))
    allow = torch.from_numpy(filler.vocab.allow)[torch.tensor([0, 1, 0])]
    want = fast.masked_fill(~allow, float("-inf")).topk(cols.shape[1], dim=1).indices
    assert cols.tolist() == want.tolist()


def _reference_encode(tok, requests, max_length):
    """The per-request loop the numpy encoder replaced (kept here as its specification). A caption's text
    is plain text: "<mask>" typed in a caption is split into ordinary tokens, never a second mask."""
    texts = list(dict.fromkeys(r.left + r.word + r.right for r in requests))
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    by_text = {t: (ids, offs) for t, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"])}
    budget, out = max_length - 3, []
    for r in requests:
        ids, offs = by_text[r.left + r.word + r.right]
        start, end = len(r.left), len(r.left) + len(r.word)
        left = [i for i, (a, b) in zip(ids, offs) if b <= start]
        right = [i for i, (a, b) in zip(ids, offs) if a >= end and b > a]
        nl = min(len(left), max(budget // 2, budget - len(right)))
        nr = min(len(right), budget - nl)
        out.append([tok.cls_token_id] + left[len(left) - nl:] + [tok.mask_token_id] + right[:nr] + [tok.sep_token_id])
    return out


@pytest.mark.parametrize("max_length", [12, 32, 128])
def test_numpy_encoder_equals_the_per_request_loop(models, max_length):
    filler = MLMFiller(models["random"], max_length=max_length)
    rng = random.Random(0)
    caps = SAMPLE_CAPTIONS + ["  two  dogs\tand a cat\n", "Ünïcödé café, naïve waiter.", "a <mask> of dogs and cats",
                              " ".join(SAMPLE_CAPTIONS[:12]), "dog"]
    reqs = []
    for c in caps:  # every word of every caption, in a shuffled order, several requests per caption
        spans = [(m.start(), m.end()) for m in re.finditer(r"[^\W\d_]+", c)]
        for s, e in rng.sample(spans, min(4, len(spans))):
            reqs.append(FillRequest(c[:s], c[e:], "NOUN", "NN", c[s:e]))
    assert _encode(filler, reqs) == _reference_encode(filler.tokenizer, reqs, filler.max_length)


def test_ranked_chooser_equals_choose_fill_slot_by_slot(tagger, models):
    """The table-driven chooser of masked-LM answers picks what :func:`choose_fill` picks from the words."""
    filler = MLMFiller(models["random"], n_candidates=40)
    variants = VariantCheck(tagger.lemma)
    reqs, toks, originals = [], [], []
    for c, tagged in zip(SAMPLE_CAPTIONS, tagger.tag(SAMPLE_CAPTIONS)):
        for t in tagged:
            if t.pos in ("ADJ", "VERB", "NOUN"):
                reqs.append(FillRequest(c[:t.start], c[t.end:], t.pos, t.tag, c[t.start:t.end]))
                toks.append(t)
                originals.append(c[t.start:t.end])
    cols = filler.collect(filler.submit(FillSlots.from_requests(reqs)))
    for top_k, twins in ((1, False), (3, False), (10, False), (40, False), (10, True)):
        filler.choose_all(cols[:0], [], [], [], top_k, variants, tagger.known)  # builds the chooser
        filler._chooser.lower_twins = twins  # True: the general de-duplication, on every slot
        fast = filler.choose_all(cols, originals, toks, [random.Random(i) for i in range(len(reqs))], top_k, variants,
                                 tagger.known)
        slow = [choose_fill(filler.words_of(cols, i), o, t, random.Random(i), top_k, True, variants, tagger.known)
                for i, (o, t) in enumerate(zip(originals, toks))]
        assert fast == slow
    assert sum(w is not None for w in fast) > len(reqs) // 2 and any("Small" == o for o in originals)


def test_byte_level_piece_cache_tokenizes_as_the_tokenizer(models):
    """The cache of byte-level pieces (plain-ASCII captions) gives the backend's ids and offsets exactly;
    whatever it cannot do (accents, emoji, control characters, ``<mask>`` typed in a caption) goes to
    the backend, in place."""
    from openclip_ce.generation.mlm_tokens import MLMEncoder

    tok = MLMFiller(models["random"]).tokenizer
    fast, slow = MLMEncoder(tok, 128), MLMEncoder(tok, 128, fast_pieces=False)
    assert fast._pieces is not None and slow._pieces is None
    rng = random.Random(0)
    alphabet = list("abcXYZ019 .,;:'-!?\t\n\r\x0b\x0c\"()&/") + ["'s", "'ll", "n't", "  ", "é", "ü", "\x85", "\u00a0",
                                                                    "\x1c", "\x00", "<mask>", "<s>", "🙂", "\u2009"]
    texts = SAMPLE_CAPTIONS + ["", " ", "Don't!", "I'M 'S 's", "x" * 300] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) for _ in range(2000)]
    for i in range(0, len(texts), 500):  # the cache fills up across calls
        got, want = fast.tokenize(texts[i:i + 500]), slow.tokenize(texts[i:i + 500])
        for g, w in zip(got, want):
            assert g.tolist() == w.tolist()
    assert len(fast._pieces._index) > 100  # the cache was used


def test_special_token_text_in_a_caption_is_plain_text(models):
    """A caption that contains "<mask>" (or "</s>") as text: the masked sequence has one mask, at the word."""
    filler = MLMFiller(models["random"])
    tok = filler.tokenizer
    seq = _encode(filler, [FillRequest("a <mask> sign and a ", " cat </s>", "ADJ", "JJ", "black")])[0]
    assert seq.count(tok.mask_token_id) == 1 and seq.count(tok.eos_token_id) == 1  # its own end token only
    plain = _encode(filler, [FillRequest("a sign and a ", " cat", "ADJ", "JJ", "black")])[0]
    assert seq.index(tok.mask_token_id) > plain.index(tok.mask_token_id)  # after "<mask>"'s own pieces


def test_long_context_is_windowed_around_the_mask(models):
    filler = MLMFiller(models["random"], max_length=32)
    left = "a dog and a cat " * 40
    seq = _encode(filler, [FillRequest(left, " chair " + "near the window " * 40, "ADJ", "JJ", "red")])[0]
    assert len(seq) <= 32 and seq.count(filler.tokenizer.mask_token_id) == 1
    tok = filler.tokenizer
    assert "a cat<mask> chair near the window" in tok.decode(seq)
    assert seq.index(tok.mask_token_id) == 1 + (32 - 3) // 2  # the window is centred on the mask
    assert filler.fill([FillRequest(left, " chair", "ADJ", "JJ", "red")])[0]  # candidates come back


def test_vocab_filler_uses_same_tag_words_from_the_corpus(tagger):
    filler = VocabFiller.from_captions(tagger, SAMPLE_CAPTIONS * 2)
    assert "chair" in filler.vocab["NN"] and "dogs" in filler.vocab["NNS"]
    gen = NegativeGenerator(tagger, filler, types=("att", "act", "obj"), top_k=5)
    outs = gen.generate([(str(i), c) for i, c in enumerate(SAMPLE_CAPTIONS)])
    n_made = 0
    for c, n in zip(SAMPLE_CAPTIONS, outs):
        for t, v in n.items():
            if v is not None:
                n_made += 1
                assert v != c and len(v.split()) == len(c.split())
    assert n_made > len(SAMPLE_CAPTIONS)
    assert outs == gen.generate([(str(i), c) for i, c in enumerate(SAMPLE_CAPTIONS)])


def test_fast_tagging_equals_the_full_spacy_pipeline(tagger):
    """The attribute-ruler lookup gives the POS tags and content-word lemmas spaCy's own components give."""
    caps = SAMPLE_CAPTIONS + ["I can't believe it's not butter, he said while they were going.",
                              "There is something on the table that we've seen.", "Cats chased the happier dogs.",
                              "  two  spaces\tand a tab\n"]
    assert tagger._pos_table, "the test model's attribute ruler should be replicable"
    slow = SpacyTagger(SPACY_MODEL)
    slow._pos_table = None
    for c, fast_toks, slow_toks in zip(caps, tagger.tag(caps), slow.tag(caps)):
        assert [(t.start, t.end, t.pos, t.tag) for t in fast_toks] == [(t.start, t.end, t.pos, t.tag) for t in slow_toks]
        assert [t.lemma for t in fast_toks if t.pos in ("NOUN", "VERB", "ADJ")] == \
            [t.lemma for t in slow_toks if t.pos in ("NOUN", "VERB", "ADJ")], c


def test_every_tagging_ops_gives_the_default_tags():
    """The matrix multiplies --tagging-ops may choose (numpy's, torch's) give the tags thinc's default
    (blis) gives, token for token, and choose_ops keeps only such ops and leaves the tagger on one."""
    from openclip_ce.generation.tagging_ops import OPS, choose_ops, probe_captions

    caps = list(probe_captions(400)) + ["I can't believe it's not butter, he said while they were going.",
                                        "Ünïcödé café with a naïve waiter near a chair.", "  two  spaces\tand a tab\n",
                                        "RED DOUBLE-DECKER BUS PARKED BY 3 TALL BUILDINGS"]
    tagger = SpacyTagger(SPACY_MODEL, ops="blis")
    reference = tagger.tag(caps)
    for ops in OPS[1:]:
        tagger.set_ops(ops)
        assert tagger.tag(caps) == reference, ops
    info = choose_ops(tagger, texts=caps[:64], rounds=1)
    assert info["ops"] in OPS and all(info["same_tags"].values()) and set(info["captions_per_s"]) == set(OPS)
    assert tagger.ops == info["ops"] and tagger.tag(caps) == reference


def test_two_letter_fills_are_rejected_but_two_letter_words_can_still_be_edited(tagger):
    variants = VariantCheck(tagger.lemma)
    tok = Tok(6, 11, "NOUN", "NN", "table")
    rng = random.Random(0)
    # "fr" / "ab" are BPE pieces or abbreviations that a dictionary lookup lets through
    assert choose_fill(["fr", "ab", "chair"], "table", tok, rng, 1, True, variants, tagger.known) == "chair"
    assert choose_fill(["fr", "in"], "table", tok, rng, 5, True, variants, tagger.known) is None
    gen = NegativeGenerator(tagger, None, types=("rel",))
    swaps = {one(gen, "a man watching tv on a couch", key)["rel"] for key in "abcdefgh"}
    assert "a tv watching man on a couch" in swaps  # a 2-letter noun is still swapped
    caps = {one(gen, "a man watching TV on a couch", key)["rel"] for key in "abcdefgh"}
    assert caps and not any("MAN" in s or "Couch" in s or "tv" in s.split() for s in caps)  # each keeps its case
    assert all("TV" in s for s in caps)  # an all-capitals word in a lowercase caption may be a name: never edited
