"""``--languages en``: the word check of captions CLD2 calls English (:class:`openclip_ce.shards.language.EnglishCheck`).
Short product titles in another language that CLD2 calls English, reliably by its own flag, are
another language when their one lowercase word is another language's; English captions, short ones
included, stay English."""

import pytest

from openclip_ce.shards.language import LanguageFilter

# LAION-400M alt-text (rom1504/img2dataset tests/test_files/test_10000.parquet, commit 95523bc): CLD2
# calls each English, reliably; each got English words put in before the check of its one lowercase word
FOREIGN = ["Faculdade dos Guararapes", "Diesel Sweat & Pull UMLT-Willy gris"]
# Multi30k validation captions (multi30k/dataset data/task1/raw/val.en.gz, commit a3d2e0d), whole and cut to
# three words, and COCO val2017 captions (ruizewang/evaluate annotations/captions_val2017.json, 1152656)
ENGLISH = ["A group of men are loading cotton onto a truck", "A man sleeping", "A boy wearing", "Two men setting",
           "A balding man", "A lady in", "A brown dog", "A young boy", "A smiling woman",
           "A man riding a bike down a street.", "A black and white photo of a dog on a bed."]


@pytest.fixture(scope="module")
def english():
    from openclip_ce.generation.tagging import SpacyTagger
    from openclip_ce.testing.make_shards_runs import SPACY_MODEL

    return SpacyTagger(SPACY_MODEL).english


def test_one_foreign_word_that_is_all_a_short_caption_s_lowercase_is_another_language(english):
    import pycld2

    words = LanguageFilter(("en",), english)
    cld2 = LanguageFilter(("en",))
    for text in FOREIGN:
        reliable, _, found = pycld2.detect(text)
        assert reliable and found[0][1] == "en", text  # what the word check is there for
        assert cld2.other(text) is None, text
        assert words.other(text) == "und", text


def test_english_captions_stay_english(english):
    words = LanguageFilter(("en",), english)
    for text in ENGLISH:
        assert words.other(text) is None, text
    # one other language's word among English ones does not make a caption foreign ("dos" and "gris"
    # are entries of the English dictionary too), nor a name particle among capitalised words with an
    # English stop word
    assert words.other("Two dogs playing dos and don'ts") is None
    assert words.other("A gris cat on the bed") is None
    assert words.other("Sketch of Alfonso de Castilla on the wall") is None
