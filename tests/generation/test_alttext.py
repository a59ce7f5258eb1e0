"""make-shards on web alt-text (through ``openclip-ce make-shards --filler vocab``): no broken edit, Title
Case and ALL CAPS get negatives, names, titles and labels are never edited, other languages (short ones
CLD2 calls English included) get none and are counted, and English ones keep theirs."""

import json
import re

import pytest

from openclip_ce import cli
from openclip_ce.negatives import decode_negatives
from openclip_ce.testing.alttext_captions import (CAPS, CLD2_ENGLISH, NAMES, OTHER_LANGUAGES, PLAIN, PROTECTED,
                                                  SHORT_ENGLISH, TITLES, all_captions)
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, jpeg, read_tar, write_tar

@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    root = tmp_path_factory.mktemp("alttext")
    members = []
    for rep in range(2):  # twice: the vocabulary keeps words seen twice
        for i, cap in enumerate(all_captions()):
            members += [(f"r{rep}_{i:03d}.jpg", jpeg(i)), (f"r{rep}_{i:03d}.txt", cap.encode())]
    write_tar(root / "in" / "00000.tar", members)
    return root


def _run(shard, out, *extra):
    assert cli.main(["make-shards", str(shard / "in"), "--out", str(shard / out), "--filler", "vocab",
                     "--spacy-model", SPACY_MODEL, "--no-progress", "--tagging-ops", "blis", *extra]) == 0
    caps, negs = {}, {}
    for name, data in read_tar(shard / out / "00000.tar"):
        key, ext = name.split(".", 1)
        if ext == "txt":
            caps[key] = data.decode()
        elif ext == "neg.json":
            negs[key] = decode_negatives(data)
    stats = json.loads((shard / out / "stats.json").read_text())
    return [(caps[k], negs[k]) for k in caps], stats


@pytest.fixture(scope="module")
def result(shard):
    return _run(shard, "out")


def _made(negs):
    return {t: v for t, v in negs.items() if v is not None}


def test_no_edit_touches_units_tags_urls_slugs_files_or_hyphenated_words(result):
    samples, _ = result
    seen = 0
    for caption, negs in samples:
        for keep in PROTECTED.get(caption, []):
            for t, v in _made(negs).items():
                seen += 1
                assert v.count(keep) == caption.count(keep), (t, caption, v)
    assert seen >= 20  # the captions do get negatives, elsewhere in the caption


def test_title_case_and_all_caps_get_negatives_in_the_original_case(result):
    samples, _ = result
    title = [n for c, n in samples if c == "Kitchen Cabinet Storage Ideas by Larder With Fridge Freezer"]
    assert title and all(_made(n) for n in title)  # no negative at all before: every word a proper noun
    for caption, negs in samples:
        if caption in CAPS:
            assert _made(negs), caption
        for t in ("att", "act", "obj"):
            v = negs[t]
            if v is None or caption not in CAPS + list(NAMES):
                continue
            changed = [(w, o) for w, o in zip(v.split(), caption.split()) if w != o]
            assert len(changed) == 1, (caption, v)
            (word, original), = changed
            if caption in CAPS:
                assert word.isupper(), (caption, v)
            else:  # the case of the word it replaces: "Cabinet" -> "Drawer", "feat" -> "larder"
                assert word[0].isupper() == original[0].isupper() and word[1:].islower(), (caption, v)


def test_names_and_brands_are_never_edited(result):
    samples, _ = result
    checked = 0
    for caption, negs in samples:
        for name in NAMES.get(caption, []):
            for v in _made(negs).values():
                checked += 1
                assert name in v, (caption, v)
    assert checked >= 2
    # a band, a song and its singers: every word of it is a name or a title
    assert not any(_made(n) for c, n in samples if c == "The Roots - You Got Me feat Erykah Badu")


def test_titles_labels_and_names_of_dictionary_words_are_never_edited(result):
    """Stock-site labels, the shop after a bar, the name after "by", a work's title before "Edition", a
    title from "The", capitals inside a sentence, a place's name, a title before its subtitle, a
    lowercase word no dictionary holds: every negative keeps them, and the captions still get negatives."""
    samples, _ = result
    for caption, keep in TITLES.items():
        made = [v for c, n in samples if c == caption for v in _made(n).values()]
        assert made, caption
        for v in made:
            for k in keep:
                assert k in v, (caption, v)


def test_other_languages_get_no_negative_and_their_own_kind(result, shard):
    """Other scripts and languages CLD2 identifies, and short captions CLD2 calls English whose words
    are another language's ("initiale", "bordo", "di"); English captions keep their negatives, also short
    ones with a word no dictionary holds ("itunes", "hoodie") and ones with accents ("café")."""
    samples, stats = result
    for caption, negs in samples:
        if caption in OTHER_LANGUAGES + CLD2_ENGLISH:
            assert not _made(negs), caption
        if caption in PLAIN + SHORT_ENGLISH + CAPS:
            assert _made(negs), caption
    assert stats["problems"] == {"other_language_caption": 2 * len(OTHER_LANGUAGES + CLD2_ENGLISH)}
    cafe = [n for c, n in samples if c == "A café with a naïve waiter near a chair."]
    assert any(v.count("café") == 0 or v.count("naïve") == 0 for n in cafe for v in _made(n).values())
    assert stats["samples_without_negatives"] == sum(not _made(n) for _, n in samples)
    # --languages all: the filter is off, nothing is counted as another language
    _, stats_all = _run(shard, "out-all", "--languages", "all")
    assert "other_language_caption" not in stats_all["problems"]
    settings = json.loads((shard / "out-all" / ".make-shards" / "config.json").read_text())
    assert settings["languages"] == "all"
    # --languages en,fr: the word check knows English words only, so CLD2 alone decides: the Italian
    # caption it calls English is kept and edited, as with the release before the check
    samples_fr, stats_fr = _run(shard, "out-fr", "--languages", "en,fr")
    italian = [n for c, n in samples_fr if c == "Come preparare e attuare un piano di marketing"]
    assert italian and all(_made(n) for n in italian)
    assert stats_fr["problems"]["other_language_caption"] < stats["problems"]["other_language_caption"]


def test_a_bad_languages_value_is_one_line(shard, capsys):
    assert cli.main(["make-shards", str(shard / "in"), "--out", str(shard / "bad"), "--languages", "english!"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"--languages: english! is not a language code", err[0])
