"""Shared fixtures: open_clip's main branch (the vendored snapshot), plain and patched (see openclip_ce/testing/open_clip_main.py)."""

import os
import tarfile
from pathlib import Path

import pytest

from openclip_ce.testing.open_clip_main import EXPECTED, ROOT, TARBALL_ENV, main_tarball, patched_copy


@pytest.fixture(scope="session")
def main_src(tmp_path_factory) -> Path:
    """The ``src/`` directory of open_clip main, extracted from the vendored snapshot."""
    tarball = main_tarball()
    if tarball is None or not tarball.is_file():
        pytest.skip(f"open_clip main snapshot not found: expected {EXPECTED} (or set {TARBALL_ENV})")
    out = tmp_path_factory.mktemp("open_clip_main")
    with tarfile.open(tarball) as tar:
        try:
            tar.extractall(out, filter="data")
        except TypeError:  # a Python without extraction filters
            tar.extractall(out)
    src = next(out.glob("*/src"))
    assert (src / "open_clip_train" / "main.py").is_file(), f"{tarball}: no src/open_clip_train/main.py"
    return src


@pytest.fixture(scope="session")
def patched_main_src(main_src, tmp_path_factory) -> Path:
    """A copy of main's ``src/`` with ``patches/open_clip-main-*-plugins.patch`` applied."""
    patch = next(ROOT.glob("patches/open_clip-main-*-plugins.patch"))
    return patched_copy(main_src, ("open_clip", "open_clip_train"), patch, tmp_path_factory.mktemp("open_clip_main_patched"))


@pytest.fixture(autouse=True)
def _fresh_text_row_capacity():
    """The packed layout's row capacity is per process: every test starts from none, whatever ran before."""
    from openclip_ce.training.packing import CAPACITY

    CAPACITY.configure(None)
    yield
    CAPACITY.configure(None)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4; most slow tests start processes of
    their own (torchrun's two ranks, make-shards' workers), so more workers would only queue for the cores."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests that start a local Ray cluster share one xdist worker and run one after another (two clusters at
    once would compete for the cores and the memory); the slow multi-process tests are handed out first, so
    that no long test starts last and runs alone while the other workers idle."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
