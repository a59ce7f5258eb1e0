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
