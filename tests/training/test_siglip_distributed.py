"""CE-SigLIP: 1 process vs 6 ranks (torchrun, gloo, CPU), same global batch, for every --loss-dist-impl.

Six ranks run every code path of the exchanges: two bidir hops (the second passes on different
tensors left and right, so a gradient sent back the wrong way shows) and the one-way remainder, five
shift hops, the per-rank all-reduces and the all-gather."""

from pathlib import Path

import pytest

from openclip_ce.training.siglip_loss import SIGLIP_DIST_IMPLS
from openclip_ce.testing.proc import torchrun_results

pytestmark = pytest.mark.slow
WORLD = 6


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_siglip")
    return torchrun_results(Path(__file__).parent / "dist" / "siglip_equivalence.py", WORLD, out)


def test_every_impl_and_mode_ran(results):
    modes = {(line["impl"], line["itc"]) for line in results[0]}
    assert modes == {(i, m) for i in SIGLIP_DIST_IMPLS for m in ("global", "own", "none")}
    assert all(line["world"] == WORLD for line in results[0])


def test_loss_and_terms_averaged_over_ranks_equal_single_process(results):
    for line in results[0]:
        assert line["total_rank_mean"] == pytest.approx(line["ref_total"], rel=1e-5), line
        for k, v in line["ref_terms"].items():
            assert line["terms_rank_mean"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (k, line)
    # each rank holds its share, not the global value (as SigLipLoss): the check above is not vacuous
    totals = [rank[0]["total_this_rank"] for rank in results]
    assert max(totals) - min(totals) > 1e-3


def test_gradients_equal_single_process_including_scale_and_bias(results):
    for rank in results:
        for line in rank:
            assert line["grad_max_rel_err"] < 1e-5, line
            for name in ("logit_scale_grad", "logit_bias_grad"):
                got, ref = line[name]
                assert got == pytest.approx(ref, rel=1e-5), (name, line)  # not world_size times it


def test_thresholds_identical_on_every_rank_and_equal_to_single_process(results):
    for line in results[0]:
        first = line["thresholds_all_ranks"][0]
        assert all(th == first for th in line["thresholds_all_ranks"])
        for t, v in line["ref_thresholds"].items():
            assert first[t] == pytest.approx(v, rel=1e-5, abs=1e-6)
        assert first["act"] == 0.0  # no valid 'act' negative: kept
