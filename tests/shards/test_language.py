"""``--languages en``: the word check of captions CLD2 calls English (:class:`openclip_ce.shards.language.EnglishCheck`).
Short product titles in another language that CLD2 calls English, reliably by its own flag, are
another language when their one lowercase word is another language's, or when their words are far
likelier in another language (word frequencies); English captions, short ones and lists of lowercase
names included, stay English."""

import pytest

from openclip_ce.errors import UserError
from openclip_ce.shards.language import LanguageFilter, parse_languages

# LAION-400M alt-text (rom1504/img2dataset tests/test_files/test_10000.parquet, commit 95523bc): CLD2
# calls each English, reliably; each got English words put in before the check of its one lowercase word
FOREIGN = ["Faculdade dos Guararapes", "Diesel Sweat & Pull UMLT-Willy gris"]
# Multi30k validation captions (multi30k/dataset data/task1/raw/val.en.gz, commit a3d2e0d), whole and cut to
# three words, and COCO val2017 captions (ruizewang/evaluate annotations/captions_val2017.json, 1152656)
# LAION-400M alt-text (as above) that CLD2 calls English, reliably, and that no function word gives away: only
# the word frequencies do (Dutch, French in Title Case, Italian, German)
BY_FREQUENCY = ["Topper voor arbiter Makkelie in Champions League", "Chaussures Femme Tongs Havaianas YOU MAXI Orange",
                "Anello con Diamanti e Acquamarina ct 2.10",
                "Digitales Infrarot Thermometer Baby Kind Stirn Thermometer Kontaktlos Ft1"]
# LAION alt-text of other sources (LAION-2B: baaivision/CapsFusion data/example_data.json, commit ace4880;
# LAION-Aesthetics: caradryanl/CopyMark diffusers/datasets/laion-aesthetic-2-5k/caption.json, commit 3de7327;
# LAION-400M as above) that CLD2 calls English: Italian, French, Dutch. Their words are only 3 to 100 times
# likelier in another language, but one of their lowercase words is another language's and no English word
WITH_THEIR_WORD = ["Jeggings in denim stretch con stampa glitter", "nike air vapormax flyknit utility homme",
                   "converse wit white zwart hot b373f e642e", "Acana regionals ranchlands dog hondenvoer 6 kg"]
# English (LAION-400M, as above) with such a word, or nearly as likely in another language: kept
ENGLISH_WITH_THEIR_WORD = ["nike zoom vick ii 2 og top view", "A large famille rose dish Guangxu six-character mark"]
# Multi30k validation captions (as below) in German, French and Czech cut to three words: CLD2 cannot place them
SHORT_FOREIGN = ["Ein brauner Hund", "Un chien brun", "Un homme dormant", "Dva psi s", "Muž v sukni"]
# English alt-text (LAION-400M, as above; the last from COCO) with lowercase words that are no dictionary word:
# names, brands and typos, which no language's word list holds either, so they do not make it another language
ENGLISH_NAMES = ["brian jonestown massacre", "I love susan T-Shirt", "Small fox wallvase", "Connected worksites icon",
                 "pair gray nightstands madenewdesignct", "a plate of polents a tomatoe and brocolli"]
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


def test_captions_far_likelier_in_another_language_are_another_language(english):
    import pycld2

    from openclip_ce.shards.language import EnglishCheck, word_frequencies

    words = LanguageFilter(("en",), english)
    freq = word_frequencies()
    for text in BY_FREQUENCY:
        reliable, _, found = pycld2.detect(text)
        assert reliable and found[0][1] == "en", text
        plain = [w.lower() for w in text.split() if w.isalpha()]
        assert freq.margin(plain) > EnglishCheck.MARGIN, text  # the frequencies decide, not the function words
        assert words.other(text) == "und", text
    for text in SHORT_FOREIGN:
        assert words.other(text) == "und", text


def test_names_and_typos_are_no_language_s_words(english):
    from openclip_ce.shards.language import word_frequencies

    words = LanguageFilter(("en",), english)
    for text in ENGLISH_NAMES:
        assert words.other(text) is None, text
    freq = word_frequencies()
    # ten times more frequent elsewhere than in English: another language's word
    assert freq.theirs("noir") and freq.theirs("voor") and freq.theirs("und")
    # a name every language writes, a name no list holds, and an English word, are not
    assert not freq.theirs("susan") and not freq.theirs("jonestown") and not freq.theirs("the")
    assert freq.margin(["the", "dog"]) < 0 < freq.margin(["der", "hund"])


def test_a_word_of_theirs_lowers_the_margin(english):
    import pycld2

    from openclip_ce.shards.language import EnglishCheck, word_frequencies

    words = LanguageFilter(("en",), english)
    freq = word_frequencies()
    for text in WITH_THEIR_WORD:
        assert pycld2.detect(text)[2][0][1] in ("en", "un"), text
        plain = [w.lower() for w in text.split() if w.isalpha()]
        assert EnglishCheck.MARGIN_WITH_THEIR_WORD < freq.margin(plain) < EnglishCheck.MARGIN, text
        assert words.other(text) == "und", text
    for text in ENGLISH_WITH_THEIR_WORD:
        assert words.other(text) is None, text


def test_languages_are_codes_cld2_reports_and_iso_names_reach_them():
    """CLD2 reports Hebrew as "iw", Javanese "jw", Norwegian "no": --languages he kept no Hebrew caption. A code
    it never reports ("xx", a typo) or one with a region ("zh-hant": the filter compares "zh") matched no caption,
    so every sample lost its negatives behind a warning at the end of the run."""
    assert parse_languages("en,de") == ("en", "de")
    assert parse_languages("he,nb,jv") == ("iw", "no", "jw")
    hebrew = "שלום עולם, זהו משפט בעברית כדי לבדוק את הזיהוי של השפה"
    assert LanguageFilter(parse_languages("he")).other(hebrew) is None
    assert LanguageFilter(parse_languages("en")).other(hebrew) is not None
    for spec in ("xx", "zh-hant", "en,qq"):
        with pytest.raises(UserError, match=r"--languages: \S+ is no language that CLD2 identifies"):
            parse_languages(spec)


def test_only_languages_cld2_detects_are_accepted():
    """pycld2.LANGUAGES names languages CLD2 never returns ("tw": Twi): selecting one kept no caption."""
    for spec in ("tw", "os"):
        with pytest.raises(UserError, match="is no language that CLD2 identifies"):
            parse_languages(spec)
    assert parse_languages("ja,zh,ko,ru") == ("ja", "zh", "ko", "ru")
