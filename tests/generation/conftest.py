"""Fixtures of the generation tests: one spaCy tagger per test module."""

import pytest

from openclip_ce.testing.make_shards_runs import SPACY_MODEL


@pytest.fixture(scope="module")
def tagger():
    from openclip_ce.generation.tagging import SpacyTagger

    return SpacyTagger(SPACY_MODEL)
