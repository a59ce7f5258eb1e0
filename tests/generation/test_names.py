"""The spans no edit may enter, found from the caption's text alone (:mod:`openclip_ce.generation.names`,
:func:`~openclip_ce.generation.alttext.protected_spans`): their cheap pre-checks skip only captions where
the full search finds nothing."""

import random

import pytest

from openclip_ce.generation import names
from openclip_ce.generation.alttext import _PROTECTED, case_normalised, protected_spans

# each holds one kind of text _PROTECTED finds (a tag, an entity, a URL, an attribute, a path, a domain,
# an address, an underscore, ...), then plain text and text that only looks close to it
PROTECTED_KINDS = [
    "<strong>Red dress</strong> for a summer party", "Salt &amp; Pepper Shakers", "Salt &#38; Pepper",
    "visit http://example.com today", "visit www.example.com today", "visit www. today",
    'Blue shirt <div class="product-title main">', "size=large red dress", "red_summer_dress.jpg of a woman",
    "example.com/page red dress", "see example.com for more", "mail me@example.org", "a|b c", "x~y", "a^b",
    "{red} dress", "U.S.A flag", "C:\\photos\\dog", "a cut-off tag <b",
    "A man riding a bike down a street.", "A dog. A cat.", "Dr. Smith and a dog", "3.5 inch floppy",
    "Rock & Roll", "two dogs > one cat",
]
# captions with a label _LABELS finds, written every way the pre-check must still let through
# (capitals, an apostrophe, a letter outside ASCII, a hyphen)
LABELED = [
    "Apple cake - Stock Photo", "Purple witch's hat Royalty Free Stock Photos", "A hi-res photo of a cat",
    "Red dress for sale", "Amazon's best sellers of the week", "New arrivals: red dress", "Clip art of a cat",
    "Getty Images of a dog", "Café chairs on sale", "Vector illustration of a red car", "123rf cat photo",
    "BEST SELLERS 2019", "Buy online: blue vase", "High quality leather bag", "cartoon drawings of a dog",
    # the stock sites' label in other languages (LAION-400M alt-text, as below)
    "Stock fotografie: Boy playing with blocks", "Traffic at Night - Stock fotografie",
    "Young Man Working In Dry Cleaning — Stok fotoğraf", "Elderly man cutting vegetables — Foto Stock #3359431",
]


def test_protected_spans_are_those_of_the_full_search():
    for text in PROTECTED_KINDS:
        assert protected_spans(text) == [m.span() for m in _PROTECTED.finditer(text)], text
    # found, not only skipped alike: all but the plain ones
    assert [text for text in PROTECTED_KINDS if not protected_spans(text)] == [
        "A man riding a bike down a street.", "A dog. A cat.", "Dr. Smith and a dog", "Rock & Roll"]


def test_labels_are_found_through_the_pre_check():
    for text in LABELED:
        full = [m.span() for m in names._LABELS.finditer(text)]
        assert full, text
        assert set(full) <= set(names.name_spans(text)), text
    assert [m for m in map(names._LABELS.search, ["A man riding a bike.", "A high chair by a table"]) if m] == []


def test_captions_with_one_capital_keep_the_rules_that_apply_to_them():
    """The first letter is the caption's only capital: most rules cannot apply and are skipped, but the
    medium word, the shop after a dash or a bar, "feat" and quotes still count."""
    def found(text):
        return sorted(text[s:e] for s, e in names.name_spans(text))

    assert found("A man riding a bike down a street.") == []
    assert found("A photo of a dog on a bed.") == []  # the scene's photo
    assert found("Photo of a dog on a bed") == ["Photo"]
    assert found("A red dress - Lyst") == ["Lyst"]
    assert found("A red dress | Christmas World") == ["Christmas World"]
    assert found("A man feat a dog") == ["A man feat a dog"]
    assert found('A cat in a "big" box') == ['"big"']
    assert found("Amazon's best sellers of the week") == ["Amazon", "best sellers"]


def test_case_normalised_copies_only_title_case_and_all_caps():
    assert case_normalised("A man riding a bike down a street.") is None
    assert case_normalised("a dog on a Bed") is None  # one capital of four words after the first
    assert case_normalised("Kitchen Cabinet Storage Ideas") == "kitchen cabinet storage ideas"
    assert case_normalised("A BIPLANE AND A SMALL BOAT") == "a biplane and a small boat"
    assert case_normalised("x Dog Cat") == "x dog cat"  # the capitals after a lowercase first character


# --------------------------------------------------------------------------- names with a non-word
# LAION-400M alt-text from rom1504/img2dataset tests/test_files/test_10000.parquet (commit 95523bc):
# caption -> (words no edit may touch, words that stay editable)
NAME_WORDS = {
    "Bronski Beat - Truthdare Doubledare download mp3 album": (["Bronski", "Beat"], ["album"]),
    "Glenni Coffee Table": (["Glenni", "Coffee"], ["Table"]),
    "Alba Gloss Pocket Leggings": (["Gloss"], ["Pocket", "Leggings"]),
    "Ubuntu Launches Private Cloud": (["Launches"], ["Private", "Cloud"]),
    "Add This Blog to the JacketFlap Blog Reader": (["JacketFlap Blog"], ["Reader", "Add"]),
    "Dsd Tech For Gopro 3 Way Grip Chesty Chest Harness Accessories": (["Dsd Tech"], ["Grip", "Harness"]),
    "Slipknot - Wait and Bleed (live)": (["Slipknot"], ["Wait", "Bleed"]),
}


@pytest.fixture(scope="module")
def captions(tagger):
    from openclip_ce.generation.alttext import CaptionTagger

    return CaptionTagger(tagger)


def _editable(captions, text):
    from openclip_ce.generation.alttext import EDITABLE_POS

    toks, = captions.tag([text])
    return [text[t.start:t.end] for t in toks if t.pos in EDITABLE_POS]


def _blocked(captions, text, span):
    """Is no token of ``span`` (its first occurrence in ``text``) editable?"""
    from openclip_ce.generation.alttext import EDITABLE_POS

    toks, = captions.tag([text])
    start = text.index(span)
    inside = [t for t in toks if start <= t.start and t.end <= start + len(span)]
    return inside and all(t.pos not in EDITABLE_POS for t in inside)


def test_the_word_after_a_name_is_part_of_it(captions):
    """A capitalised word no dictionary holds is a name, and so is the capitalised word right after it
    ("Bronski Beat"); the words after that stay editable ("Glenni Coffee Table": the table), and a
    single capitalised word before the first dash names the artist or brand ("Slipknot - ...")."""
    for text, (fixed, free) in NAME_WORDS.items():
        editable = _editable(captions, text)
        for span in fixed:
            assert _blocked(captions, text, span), (text, span, editable)
        for word in free:
            assert word in editable, (text, word, editable)


def test_names_leave_sentences_and_stop_words_alone(captions):
    # a stop word after a name is not part of it, nor the words after that; a lowercase word never is
    assert _editable(captions, "Dsd Tech For Sale Grip") == ["Grip"]
    assert _editable(captions, "Zorblax Sofa With Red Cushions") == ["Red", "Cushions"]
    assert _editable(captions, "Zorblax dog on a red sofa") == ["dog", "red", "sofa"]
    # a COCO caption (val2017) with one capital keeps every word it had
    assert _editable(captions, "A man riding a bike down a street.") == ["man", "riding", "bike", "street"]


# --------------------------------------------------------------------------- titles and organisations
# LAION-style alt-text (rom1504/img2dataset tests/test_files/test_10000.parquet, commit 95523bc, and the
# held-out set of docs/make-shards-alt-text.md): caption -> the names the spans cover
TITLE_SPANS = {
    "Chaos Mountain Brewing": ["Chaos Mountain Brewing"],  # the word of an organisation ends the run
    "Banburee Wellness Resort & Spa": ["Banburee Wellness Resort & Spa"],
    "Madagascar: Escape 2 Africa (2008) {Hindi-English} 480p | 720p": ["Escape 2 Africa", "Madagascar"],
    "Saving Grace (2000)": ["Saving Grace"],  # a title before its year
    "Apple Releases Significant Update to Logic Pro X": ["Logic Pro X"],  # a model's last letter
    "Chocolate Cream Pie II": ["Chocolate Cream Pie II"],  # a sequel's numeral
}
# a letter that is a size or part of a joined word, a year inside a sentence: no span
NO_TITLE = [
    "Women's All Cotton Short Sleeve Crewneck T-shirt", "Fiamma Bike Cover S 2-3",
    "A vintage car from (1965) parked on a street", "Vitamin C serum on a table",
]


def test_titles_before_a_year_models_and_organisations_are_names():
    def found(text):
        return [text[s:e] for s, e in names.name_spans(text)]

    for text, want in TITLE_SPANS.items():
        assert set(want) <= set(found(text)), (text, found(text))
    for text in NO_TITLE:
        assert not [s for s in found(text) if " " in s], (text, found(text))
    assert found("Take A Hike V-neck Tee") == ["A Hike V-neck Tee"]  # the article rule, not a model letter


# LAION-400M alt-text written as CSV fields: wrapped in quotes, each quote inside doubled
CSV_FIELDS = {
    '"Pink ""Tree"" Bedding Cover Set"': ['"Tree"'],
    '"Carpet Kingsmead Stoddard Suffolk Berber ""Rib Cream"" BRICOFLOR"': ['"Rib Cream"'],
    '"""Punisher"" Start Button"': ['"Punisher"'],  # a quote at the start: not the whole caption
    '"Torchwood ""They Keep Killing Susie"""': ['"They Keep Killing Susie"'],  # and at the end
    # a field written into a field again (LAION-2B alt-text): read twice
    '"""""""Boy with Luv"""" pink look"""': ['"Boy with Luv"'],
    '"""2013 Land Rover DEFENDER """"limited edition"""" 19795"""': ['"limited edition"'],
}
# inch marks, a lone quote, a caption in quotes with no doubled one, a doubled quote outside a CSV field
NO_QUOTE = ['"Beverly Hills 2.25"" Button (10 pack)"', '"Lohas 27.75"" x 41.13"" Bathroom Shelf"',
            '"Diamond Louisville Slugger Genesis "" Kids Baseball"', '"a red dress on a chair"', '30"" Range Hood',
            # read twice: an inch mark, and quotes around the whole caption
            '"""24"""" Professional Tile Cutter"""', '"""What Should I Name My Trendy Cocktail Bar?"""']


def test_doubled_quotes_of_a_csv_field_are_quotes():
    def quoted(text):
        return [text[s:e].replace('""', '"') for s, e in names.name_spans(text) if '"' in text[s:e]]

    for text, want in CSV_FIELDS.items():
        assert quoted(text) == want, (text, names.name_spans(text))
    for text in NO_QUOTE:
        assert quoted(text) == [], text
    # the reading keeps every offset, whatever the quotes
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice('"" ab1.') for _ in range(rng.randrange(0, 12)))
        assert len(names._csv_unescaped(text)) == len(text), text
