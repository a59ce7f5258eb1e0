"""The architecture's contracts: a benchmark is one file; a plugin is checked against the contract."""

import json
import textwrap

import pytest

from openclip_ce.cli import main
from openclip_ce.evaluate import registry
from openclip_ce.evaluate.benchmarks import __path__ as benchmarks_path
from openclip_ce.testing.tiny_clip import write_tiny_model_dir
from openclip_ce.contract import TrainingPlugin, contract_problems
from openclip_ce.training.plugin import plugin

TOY_BENCHMARK = '''
from openclip_ce.evaluate.common import BenchmarkMissing, Case, ImageRef, pos_wins
from openclip_ce.evaluate.registry import Benchmark


def evaluate(root, scorer, opts):
    cfg = BENCHMARK.settings(opts)
    images = sorted((root / "toybench").glob("*.png"))
    if not images:
        raise BenchmarkMissing("expected toybench/*.png")
    cases = [Case(ImageRef(str(p)), ("a caption", "another caption")) for p in images]
    correct = pos_wins(scorer.score(cases, desc="toybench"))
    return {"summary": {"acc": float(correct.mean()), "flag": float(cfg["flag"])}}


BENCHMARK = Benchmark(
    name="toybench", order=99, evaluate=evaluate, headline=("acc",),
    defaults={"flag": 0}, add_arguments=lambda g: g.add_argument("--toy-flag", type=int, default=0),
    options=lambda args: {"flag": args.toy_flag},
    protocol=lambda cfg: {"toybench": f"flag={cfg['flag']}"}, chance=(("acc", 0.5),),
)
'''


@pytest.fixture
def toy_benchmark(tmp_path, monkeypatch):
    extra = tmp_path / "extra_benchmarks"
    extra.mkdir()
    (extra / "toybench.py").write_text(textwrap.dedent(TOY_BENCHMARK))
    monkeypatch.setattr("openclip_ce.evaluate.benchmarks.__path__", [*benchmarks_path, str(extra)])
    registry._load.cache_clear()
    yield
    registry._load.cache_clear()


def test_a_new_benchmark_is_one_new_file(toy_benchmark, tmp_path):
    from PIL import Image

    assert registry.names()[-1] == "toybench" and registry.get("toybench").chance_level("acc") == 0.5
    (tmp_path / "data" / "toybench").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / "data" / "toybench" / f"{i}.png")
    model = write_tiny_model_dir(tmp_path / "model")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", model, "--data-root", str(tmp_path / "data"), "--benchmarks", "toybench",
                 "--toy-flag", "7", "--workers", "0", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["summary"]["toybench/flag"] == 7.0 and 0.0 <= res["summary"]["toybench/acc"] <= 1.0
    assert res["protocol"]["toybench"] == "flag=7"
    assert main(["compare", str(out), str(out), "--out", str(tmp_path / "c")]) == 0
    assert "## toybench" in (tmp_path / "c.md").read_text()


def test_our_plugin_follows_the_contract_and_a_broken_one_is_described():
    assert isinstance(plugin, TrainingPlugin) and contract_problems(plugin) == []

    class Broken:
        name = "clip"

        def add_arguments(self):  # takes no parser
            pass

    problems = contract_problems(Broken())
    assert any("open_clip's own objective" in p for p in problems)
    assert any(p.startswith("add_arguments() cannot be called with 1 argument") for p in problems)
    assert "no method create_loss()" in problems and "no method load_state_dict()" in problems
