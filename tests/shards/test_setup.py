"""make-shards' setup: the configuration never changes during a run, each decision is made by one function
of ``shards/setup.py`` and returned as a value (:class:`RunSetup`), which every worker gets (it pickles),
and the configuration itself goes no further than the command, the engines' constructors and the setup."""

import ast
import copy
import dataclasses
import json
import os
import pickle
import re
import sys
from pathlib import Path

import pytest

from openclip_ce import cli
from openclip_ce.shards import command
from openclip_ce.shards.captions import CaptionReader
from openclip_ce.shards.config import ShardsConfig, config_for
from openclip_ce.shards.setup import (Generation, MaskedLM, RunSetup, choose_tagging, filler_kind, masked_lm, run_setup,
                                      threads_per_worker)
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, tiny_filler, write_caption_shards

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
    assert (masked_lm(cfg) is not None) is (kind == "mlm")


def test_the_masked_lm_a_run_loads():
    cfg = config_for(["x.tar"], "out", filler_model="/m", device="cuda:1", batch_size=64, top_k=10)
    assert masked_lm(cfg) == MaskedLM("/m", "cuda:1", 64, n_candidates=30, half=None)
    assert masked_lm(config_for(["x.tar"], "out", top_k=2, fp32=True)).n_candidates == 22
    assert masked_lm(config_for(["x.tar"], "out", top_k=2, fp32=True)).half is False


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
    assert setup == RunSetup(threads=2, tagging={"ops": "numpy", "chosen_by": "--tagging-ops"}, filler="mlm",
                             generation=Generation(cfg.spacy_model, 512, 0, ("rel", "obj"), 10),
                             captions=CaptionReader("txt", None, 2000, ("en",)), chunk_size=512,
                             masked_lm=masked_lm(cfg), log_level="INFO")
    assert setup.ops == "numpy" and setup.masked_lm is not None and setup.vocab is None
    vocab = dataclasses.replace(setup, filler="vocab", masked_lm=None, vocab={"NN": ["dog", "cat"]})
    assert pickle.loads(pickle.dumps(vocab)) == vocab  # what a spawned worker or a Ray task receives
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.threads = 3


def test_the_masked_lm_rule_is_written_once():
    """``--filler mlm`` and ``--types`` decide together whether a run has a masked LM: only setup.py reads
    ``cfg.filler``, and nothing else writes the rule out."""
    readers = sorted(p.name for p in SHARDS.glob("*.py") if re.search(r"cfg\.filler\b(?!_)", p.read_text()))
    assert readers == ["setup.py"], readers
    assert not [p.name for p in SHARDS.glob("*.py") if p.name != "setup.py" and '== "mlm"' in p.read_text()]


# ----------------------------------------------------------------------------- how far the configuration goes
MAX_STOPS = 16
WHERE_IT_GOES = {"config.py", "command.py", "setup.py"}  # the flags, the command (and its engines), the setup


def _traced_stops(argv):
    """Run ``openclip-ce <argv>`` in this process and return every function of the package that the
    configuration entered: a frame with a :class:`ShardsConfig` among its locals (its own methods
    included), or a method whose ``self`` holds one."""
    root = str(Path(cli.__file__).resolve().parent)
    stops = set()

    def holds_config(frame):
        for value in frame.f_locals.values():
            if isinstance(value, ShardsConfig) or any(isinstance(v, ShardsConfig)
                                                      for v in getattr(value, "__dict__", {}).values()):
                return True
        return False

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root) and holds_config(frame):
            stops.add((os.path.relpath(frame.f_code.co_filename, root), frame.f_code.co_qualname))

    sys.setprofile(profile)
    try:
        code = cli.main(argv)
    finally:
        sys.setprofile(None)
    assert code in (0, None)
    return stops


def test_followed_from_the_command_line_the_configuration_makes_at_most_16_stops(tmp_path):
    """A default run (masked-LM filler in the worker) and a --filler vocab run, each from the command line:
    every function the configuration enters is counted; each is in the flags, the command or the setup,
    never in a worker, the shard writer, the plan or the statistics (they get narrower values)."""
    write_caption_shards(tmp_path / "in", num_shards=2, per_shard=6)
    model = tiny_filler(tmp_path, [])
    stops = set()
    for name, extra in (("mlm", ["--filler-model", model]), ("vocab", ["--filler", "vocab"])):
        stops |= _traced_stops(["make-shards", str(tmp_path / "in"), "--out", str(tmp_path / name), "--spacy-model",
                                SPACY_MODEL, "--tagging-ops", "blis", "--no-progress", *extra])
        assert json.loads((tmp_path / name / "stats.json").read_text())["coverage"]["obj"] > 0.5
    listing = "\n".join(f"{f}: {q}" for f, q in sorted(stops))
    assert len(stops) <= MAX_STOPS, f"{len(stops)} stops:\n{listing}"
    assert {f.split(os.sep)[-1] for f, _ in stops} <= WHERE_IT_GOES, listing
    assert ("shards/command.py", "run_config") in stops and ("shards/setup.py", "run_setup") in stops  # it was seen


def test_no_function_outside_the_command_and_the_setup_takes_the_configuration():
    """The engines not run above (Ray, GPU processes) included: a parameter of type ShardsConfig (or named
    ``cfg`` in shards/), or ``self.cfg``, appears only where the configuration is allowed to go."""
    package = Path(cli.__file__).resolve().parent
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            typed = any(a.annotation is not None and "ShardsConfig" in ast.unparse(a.annotation) for a in args)
            named = path.parent.name == "shards" and any(a.arg == "cfg" for a in args)
            held = any(isinstance(n, ast.Attribute) and n.attr == "cfg" and isinstance(n.value, ast.Name)
                       and n.value.id == "self" for n in ast.walk(node))
            if typed or named or held:
                found.append((path.relative_to(package).as_posix(), node.name))
    files = {f.split("/")[-1] for f, _ in found}
    assert files <= WHERE_IT_GOES, found
    assert len(found) <= MAX_STOPS, found
    assert ("shards/setup.py", "run_setup") in found  # the scan sees what it looks for
