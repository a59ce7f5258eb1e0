"""make-shards' setup: the configuration never changes during a run, each decision is made by one function
of ``shards/setup.py`` and returned as a value (:class:`RunSetup`), which every worker gets (it pickles)."""

import copy
import dataclasses
import json
import os
import pickle
import re
from pathlib import Path

import pytest

from openclip_ce.shards import command
from openclip_ce.shards.config import config_for
from openclip_ce.shards.setup import (RunSetup, choose_tagging, filler_kind, needs_masked_lm, run_setup,
                                      threads_per_worker)
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, write_caption_shards

SHARDS = Path(__file__).resolve().parents[2] / "openclip_ce" / "shards"


def test_the_configuration_cannot_be_assigned_to():
    cfg = config_for(["x.tar"], "out")
    for name, value in (("threads", 4), ("tagging_ops", "numpy"), ("workers", 2)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, name, value)


def test_a_run_leaves_its_configuration_as_it_was(tmp_path):
    """A whole run (threads from the cores, tagging ops, a vocabulary built) decides everything into its
    setup: the configuration afterwards equals a copy taken before, field by field."""
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=20)
    cfg = config_for([str(tmp_path / "in")], str(tmp_path / "out"), spacy_model=SPACY_MODEL, filler="vocab",
                     tagging_ops="numpy", threads=0, chunk_size=8, no_progress=True)
    before = copy.deepcopy(cfg)
    assert command.run_config(cfg) == 0
    assert {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)} == dataclasses.asdict(before)
    chosen = {"ops": "numpy", "chosen_by": "--tagging-ops"}
    assert json.loads((tmp_path / "out" / ".make-shards" / "config.json").read_text())["tagging_ops"] == chosen
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["tagging_ops"] == chosen and stats["coverage"]["obj"] > 0.5
    assert json.loads((tmp_path / "out" / ".make-shards" / "vocab.json").read_text())["NN"]


@pytest.mark.parametrize("filler, types, kind", [
    ("mlm", "rel,att,act,obj", "mlm"), ("mlm", "obj", "mlm"), ("vocab", "att", "vocab"),
    ("mlm", "rel", None), ("vocab", "rel", None),
])
def test_which_filler_and_whether_a_masked_lm_is_needed(filler, types, kind):
    cfg = config_for(["x.tar"], "out", filler=filler, types=types)
    assert filler_kind(cfg) == kind
    assert needs_masked_lm(cfg) is (kind == "mlm")


def test_threads_per_worker():
    assert threads_per_worker(config_for(["x.tar"], "out", threads=3, workers=8)) == 3
    cores = os.cpu_count() or 1
    assert threads_per_worker(config_for(["x.tar"], "out", workers=2)) == max(1, cores // 2)
    assert threads_per_worker(config_for(["x.tar"], "out", workers=10 * cores)) == 1


def test_tagging_ops_asked_for_are_taken_without_measuring():
    cfg = config_for(["x.tar"], "out", tagging_ops="torch", spacy_model="no-such-model")  # never loaded
    assert choose_tagging(cfg, 1) == {"ops": "torch", "chosen_by": "--tagging-ops"}


def test_the_setup_is_a_frozen_value_that_pickles(tmp_path):
    cfg = config_for([str(tmp_path)], str(tmp_path / "out"), types="rel,obj", tagging_ops="numpy")
    setup = run_setup(cfg, [], 2, choose_tagging(cfg, 2))
    assert setup == RunSetup(threads=2, tagging={"ops": "numpy", "chosen_by": "--tagging-ops"}, filler="mlm")
    assert setup.ops == "numpy" and setup.needs_masked_lm and setup.vocab is None
    vocab = RunSetup(threads=1, tagging=setup.tagging, filler="vocab", vocab={"NN": ["dog", "cat"]})
    assert pickle.loads(pickle.dumps(vocab)) == vocab  # what a spawned worker or a Ray task receives
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.threads = 3


def test_the_masked_lm_rule_is_written_once():
    """``--filler mlm`` and ``--types`` decide together whether a run has a masked LM: only setup.py reads
    ``cfg.filler``, and nothing else writes the rule out."""
    readers = sorted(p.name for p in SHARDS.glob("*.py") if re.search(r"cfg\.filler\b(?!_)", p.read_text()))
    assert readers == ["setup.py"], readers
    assert not [p.name for p in SHARDS.glob("*.py") if p.name != "setup.py" and '== "mlm"' in p.read_text()]
