"""Fixtures shared by the tests of ``openclip_ce/evaluate/``."""

import pytest


@pytest.fixture
def assert_summary():
    """``check(summary, expected)``: every expected key is in a benchmark's summary, at its value (to 1e-12)."""

    def check(summary, expected):
        for k, v in expected.items():
            assert k in summary, f"missing {k}"
            assert summary[k] == pytest.approx(v, abs=1e-12), k

    return check


@pytest.fixture(scope="session")
def evaluate_twice():
    """``run(tmp, build, *args) -> (model, [out0, out1])``: the benchmark files ``build`` writes under
    ``tmp/bench``, evaluated with ``openclip-ce eval`` for one tiny model folder, twice (two result files of the
    same run, as ``compare`` takes them)."""
    from openclip_ce.cli import main
    from openclip_ce.testing.tiny_clip import write_tiny_model_dir

    def run(tmp, build, *args):
        build(tmp / "bench")
        model = write_tiny_model_dir(tmp / "model")
        outs = []
        for i in range(2):
            out = tmp / "results" / f"m{i}.json"
            assert main(["eval", "--model", model, "--data-root", str(tmp / "bench"), "--out", str(out),
                         "--workers", "0", "--device", "cpu", *args]) == 0
            outs.append(out)
        return model, outs

    return run


@pytest.fixture(scope="session")
def mcnemar_p():
    """``p(a, b)``: the exact two-sided McNemar p-value of two per-example outcome strings ("0"/"1" each)."""
    import math

    def p(a, b):
        wins = sum(x == "1" and y == "0" for x, y in zip(a, b))
        losses = sum(x == "0" and y == "1" for x, y in zip(a, b))
        n = wins + losses
        return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n)

    return p
