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


# ----------------------------------------------------------------------------- layering
def _import_graph():
    """Every import inside the package (module level and inside functions), module -> modules."""
    import ast
    from pathlib import Path

    import openclip_ce

    root = Path(openclip_ce.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        parts = ["openclip_ce", *p.relative_to(root).with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        package = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
                prefix = ".".join(x for x in (base, node.module or "") if x)
                targets = [prefix, *(f"{prefix}.{a.name}" for a in node.names)]
            else:
                continue
            edges[m].update(t for t in targets if t in mods and t != m)
    return edges


def _cycles(edges):
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# The floors of the package, bottom first. A part (subpackage or top-level module) may import only parts on
# floors below its own: a new import that points up, or sideways between two parts of one floor, fails here.
# `testing` (fixtures and tiny models for the tests and the benchmark scripts) is the top floor: nothing in
# the package imports it at run time.
FLOORS = (
    ("__init__", "errors", "fileio", "logconfig"),              # leaves
    ("contract", "negatives", "pickled", "metrics_file", "plotting"),  # shared formats and contracts
    ("integration", "generation"),                              # open_clip's internals; hard-negative generation
    ("training", "shards"),                                     # the plugin; make-shards
    ("evaluate",),                                              # benchmarks, compare, analyze
    ("wiseft",),                                                # weight interpolation on top of evaluate
    ("cli", "train", "demo"),                                   # entry points
    ("testing",),
)


def _unit(module):
    return module.split(".")[1] if module.count(".") else "__init__"


def _upward_arrows(edges):
    """(importer, imported) pairs between parts whose floors do not allow it."""
    floor = {u: i for i, units in enumerate(FLOORS) for u in units}
    bad = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            ua, ub = _unit(a), _unit(b)
            if ua != ub and floor.get(ub, len(FLOORS)) >= floor.get(ua, -1):
                bad.append((a, b))
    return bad


def test_no_import_circle_and_every_import_points_down():
    edges = _import_graph()
    assert _cycles(edges) == []
    assert {_unit(m) for m in edges} == {u for units in FLOORS for u in units}, "a new part needs its floor"
    assert _upward_arrows(edges) == []
    # the wiring knows plugins only through the contract
    assert not [b for a, ts in edges.items() if _unit(a) == "integration" for b in ts if _unit(b) == "training"]
    switch = edges["openclip_ce.integration.switch"]
    assert switch == set() and "openclip_ce.integration.switch" in edges["openclip_ce.integration.bootstrap"]


@pytest.mark.parametrize("importer, imported", [
    ("openclip_ce.generation.tagging_ops", "openclip_ce.testing.tiny_mlm"),   # the package using a test fixture
    ("openclip_ce.integration.installer", "openclip_ce.training.plugin"),      # the wiring reaching into the plugin
    ("openclip_ce.training.loss", "openclip_ce.shards.config"),                # sideways, one floor
    ("openclip_ce.errors", "openclip_ce.fileio"),                              # between two leaves
])
def test_an_upward_arrow_fails_the_layering_check(importer, imported):
    edges = _import_graph()
    edges[importer] = set(edges[importer]) | {imported}
    assert _upward_arrows(edges) == [(importer, imported)]


def _script_imports():
    """scripts/**/*.py -> the top-level names they import, and whether they edit sys.path."""
    import ast
    from pathlib import Path

    out = {}
    for p in sorted((Path(__file__).resolve().parents[1] / "scripts").rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add((node.module or "").split(".")[0])
        edits_path = any(isinstance(n, ast.Attribute) and n.attr in ("insert", "append") and
                         isinstance(n.value, ast.Attribute) and n.value.attr == "path" for n in ast.walk(tree))
        out[p.relative_to(p.parents[2]).as_posix()] = (names, edits_path)
    return out


def _script_problems(scripts):
    """What breaks the scripts' rules: a folder other than the three kinds, an import of the tests (or of a
    test helper module), an edit of sys.path."""
    problems = []
    for s, (names, edits_path) in sorted(scripts.items()):
        if s.split("/")[1] not in ("recipes", "benchmarks", "gpu_checks"):
            problems.append(f"{s}: not in recipes/, benchmarks/ or gpu_checks/")
        if {"tests", "conftest"} & names or any(n.startswith("_") and n not in ("__future__", "_wds") for n in names):
            problems.append(f"{s}: imports test code")
        if edits_path:
            problems.append(f"{s}: edits sys.path")
    return problems


def test_scripts_import_the_package_never_the_tests():
    scripts = _script_imports()
    assert scripts and any("openclip_ce" in names for names, _ in scripts.values())
    assert _script_problems(scripts) == []
    scripts["scripts/benchmarks/new.py"] = ({"openclip_ce", "tests"}, True)  # what the check exists to stop
    scripts["scripts/new.py"] = ({"openclip_ce"}, False)
    assert _script_problems(scripts) == ["scripts/benchmarks/new.py: imports test code",
                                         "scripts/benchmarks/new.py: edits sys.path",
                                         "scripts/new.py: not in recipes/, benchmarks/ or gpu_checks/"]


def test_wiseft_builds_on_evaluate_one_way():
    """openclip_ce.wiseft uses openclip_ce.evaluate; no module of evaluate imports wiseft."""
    edges = _import_graph()
    evaluate = {m: t for m, t in edges.items() if m.startswith("openclip_ce.evaluate")}
    wiseft = {m: t for m, t in edges.items() if m.startswith("openclip_ce.wiseft")}
    assert evaluate and wiseft
    assert not [(m, t) for m, ts in evaluate.items() for t in ts if t.startswith("openclip_ce.wiseft")]
    assert any(t.startswith("openclip_ce.evaluate") for ts in wiseft.values() for t in ts)


def _tests_layout_problems(tests_dir, package_dir):
    """What breaks the tests' layout: a folder of tests named after no part of the package (or scripts/), a part
    of the package without its folder, a ``_`` helper module or an import of another test module (shared
    helpers are conftest.py fixtures, fixture writers live in openclip_ce/testing/)."""
    parts = {p.name for p in package_dir.iterdir() if (p / "__init__.py").is_file()} - {"testing"} | {"scripts"}
    folders = {p.name for p in tests_dir.iterdir() if p.is_dir() and p.name != "__pycache__"}
    problems = [f"tests/{f}/: no openclip_ce/{f}/ (or scripts/)" for f in sorted(folders - parts)]
    problems += [f"tests/{p}/: missing (openclip_ce/{p}/ has no tests)" for p in sorted(parts - folders)]
    for p in sorted(tests_dir.rglob("*.py")):
        rel = p.relative_to(tests_dir).as_posix()
        if p.name.startswith("_") and p.name != "__init__.py":
            problems.append(f"tests/{rel}: a helper module")
        problems += [f"tests/{rel}: imports {m}" for m in _test_imports(p)]
    return problems


def _test_imports(path):
    """The test modules that the file at ``path`` imports (``tests.x.test_y``, or a relative import)."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.level or module.split(".")[0] == "tests":
                out.append(module or ".")
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "tests"]
    return out


def test_tests_mirror_the_package(tmp_path):
    from pathlib import Path

    import openclip_ce

    package_dir = Path(openclip_ce.__file__).parent
    assert _tests_layout_problems(Path(__file__).parent, package_dir) == []
    for f in ("training", "scripts", "eval"):  # what the check exists to stop: a folder named after no part
        (tmp_path / f).mkdir()
    (tmp_path / "training" / "_helpers.py").write_text("")
    (tmp_path / "training" / "test_b.py").write_text("from tests.training.test_a import LINE\nfrom . import test_a\n")
    problems = _tests_layout_problems(tmp_path, package_dir)
    assert problems[0] == "tests/eval/: no openclip_ce/eval/ (or scripts/)"
    assert "tests/shards/: missing (openclip_ce/shards/ has no tests)" in problems
    assert problems[-3:] == ["tests/training/_helpers.py: a helper module",
                             "tests/training/test_b.py: imports tests.training.test_a", "tests/training/test_b.py: imports ."]
