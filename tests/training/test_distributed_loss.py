"""1 rank vs 2 ranks (torchrun, gloo, CPU): same global batch -> same loss, gradients, thresholds."""

from pathlib import Path

import pytest

from openclip_ce.testing.proc import torchrun_results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return torchrun_results(Path(__file__).parent / "dist" / "loss_equivalence.py", 2, out)


@pytest.fixture(scope="module")
def loss_modes(results):
    return [[line for line in rank if line["mode"] not in ("no_negatives_guard", "nonfinite_guard", "frozen_rank")]
            for rank in results]


def test_no_negatives_guard_is_decided_on_the_global_batch(results):
    guard = [next(line for line in rank if line["mode"] == "no_negatives_guard") for rank in results]
    assert [g["rank0_only"] for g in guard] == [None, None]  # rank 1 alone sees none: nobody stops
    assert [g["none"] for g in guard] == [3, 3]                # none anywhere: both stop at step 3


def test_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_check_step(results):
    guard = [next(line for line in rank if line["mode"] == "nonfinite_guard") for rank in results]
    # both stop at step 4 naming step 2, though rank 0's own loss was finite (its own first NaN step: 0)
    assert [g["sticky"] for g in guard] == [[4, True, 0], [4, True, 2]]
    assert [g["skipped"] for g in guard] == [None, None]            # over by the check: the scaler skipped it
    assert all(g["sticky_thresholds_finite"] and g["skipped_thresholds_finite"] for g in guard)


def test_dist_timeout_ends_the_wait_for_a_frozen_rank(results):
    """--ce-dist-timeout 0.04 (2.4 s): rank 0 waits that long for a rank that stopped responding, not the 30
    minutes of torch's default for gloo (what open_clip leaves it at)."""
    raised = next(line for line in results[0] if line["mode"] == "frozen_rank")["raised"]
    assert raised is not None and raised[1] and 2.0 <= raised[0] < 8, raised


def _key(mode):
    return (mode["gather_with_grad"], mode["local_loss"], mode["itc_negatives"])


def test_loss_value_matches_single_process(loss_modes):
    for r0, r1 in zip(*loss_modes):
        assert r0["total_rank_mean"] == pytest.approx(r0["ref_total"], rel=1e-5), r0["mode"]
        if not r0["mode"]["local_loss"]:  # every rank reports the global loss itself
            for rank in (r0, r1):
                assert rank["total_this_rank"] == pytest.approx(rank["ref_total"], rel=1e-5)
                for k, v in rank["ref_terms"].items():
                    assert rank["terms_this_rank"][k] == pytest.approx(v, rel=1e-5, abs=1e-7)


def test_gradients_match_single_process(loss_modes):
    exact = {(False, False, "global"), (True, False, "global"), (True, True, "global"),
             (True, True, "own"), (False, False, "own")}
    seen = set()
    for r0 in loss_modes[0]:
        if _key(r0["mode"]) in exact:
            seen.add(_key(r0["mode"]))
            assert r0["grad_max_rel_err"] < 1e-5, r0
            assert r0["logit_scale_grad_rel_err"] < 1e-5, r0  # not world_size times it
    assert seen == exact
    # --local-loss without --gather-with-grad drops cross-rank terms (as open_clip's ClipLoss): not exact
    approx = [r for r in loss_modes[0] if _key(r["mode"]) == (False, True, "global")]
    assert approx and approx[0]["grad_max_rel_err"] > 1e-3


def test_thresholds_identical_on_every_rank_and_equal_to_single_process(loss_modes):
    for r0 in loss_modes[0]:
        a, b = r0["thresholds_all_ranks"]
        assert a == b
        for t, v in r0["ref_thresholds"].items():
            assert a[t] == pytest.approx(v, rel=1e-5, abs=1e-6)
        assert a["act"] == 0.0  # no valid 'act' negative: kept
