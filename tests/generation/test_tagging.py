"""The tagger's lemma of a word out of context (``SpacyTagger.lemma``) is spaCy's own: the rule tables applied
directly give, word for word, what spaCy's lemmatizer gives on a one-word ``Doc``."""

import random
import re

from openclip_ce.testing.alttext_captions import NAMES, PROTECTED, TITLES

POS = ("NOUN", "VERB", "ADJ", "ADV")


def _spacy_lemma(nlp, word, pos):
    """What spaCy's lemmatizer pipe gives a one-word Doc with this POS (no morphology), lowercase."""
    from spacy.tokens import Doc

    doc = Doc(nlp.vocab, words=[word], pos=[pos])
    nlp.get_pipe("lemmatizer")(doc)
    return doc[0].lemma_.lower() or word


def _words(tagger, n=1500, seed=0):
    """Real English words in the forms the rules act on: the irregular forms and lemmas of the model's
    exception tables, dictionary words with the suffixes of its rules (plurals, -ed, -ing, -er, -est, ...),
    and the words of the alt-text test captions (Title Case, hyphens, digits, possessives included)."""
    lookups = tagger.nlp.get_pipe("lemmatizer").lookups
    index, exc, rules = (lookups.get_table(t) for t in ("lemma_index", "lemma_exc", "lemma_rules"))
    rng = random.Random(seed)
    words = set()
    for pos in POS:
        p = pos.lower()
        table = exc.get(p, {})
        keys = sorted(table)
        for k in rng.sample(keys, min(n // 4, len(keys))):
            words.add(k)
            words.update(table[k])
        base = sorted(index.get(p, ()))
        suffixes = sorted({old for old, _ in rules.get(p, ())} | {"s", "es", "ed", "ing", "er", "est", "ly"})
        for w in rng.sample(base, n // 4):
            words.add(w)
            words.add(w + rng.choice(suffixes))
    captions = [c for table in (PROTECTED, NAMES, TITLES) for c in table]
    assert len(captions) > 20
    for c in captions:
        words.update(re.findall(r"\S+", c))
        words.update(w.lower() for w in re.findall(r"[\w'-]+", c))
    return sorted(words)


def test_rule_lemma_is_spacys_own_lemma(tagger):
    assert tagger._rules is not None  # the model has a rule lemmatizer: the fast path is the one in use
    words = _words(tagger)
    assert len(words) > 3000
    nlp = tagger.nlp
    pairs = [(w, pos, tagger._lemma(w, pos), _spacy_lemma(nlp, w, pos)) for w in words for pos in POS]
    assert [p for p in pairs if p[2] != p[3]] == []
    # the words exercise the rules: many lemmas differ from their word
    assert sum(fast != w for w, _, fast, _ in pairs) > len(words) // 2


def test_lemma_without_rule_tables_is_spacys_too(tagger):
    """A POS outside the rule tables (a proper noun) goes through spaCy's Doc path."""
    assert tagger._lemma("dogs", "PROPN") == _spacy_lemma(tagger.nlp, "dogs", "PROPN")
    assert tagger.lemma("geese", "NOUN") == "goose" and tagger.lemma("running", "VERB") == "run"
