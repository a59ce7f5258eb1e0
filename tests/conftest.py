"""Shared fixtures: open_clip's main branch (the vendored snapshot), plain and patched (see tests/_vendor.py)."""

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests._vendor import EXPECTED, ROOT, TARBALL_ENV, main_tarball


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
    site = tmp_path_factory.mktemp("open_clip_main_patched")
    for pkg in ("open_clip", "open_clip_train"):
        shutil.copytree(main_src / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    check = subprocess.run(["git", "apply", "--check", str(patch)], cwd=site, capture_output=True, text=True)
    assert check.returncode == 0, f"{patch.name} does not apply to open_clip main: {check.stderr}"
    subprocess.run(["git", "apply", str(patch)], cwd=site, check=True)
    return site


@pytest.fixture(autouse=True)
def _fresh_text_row_capacity():
    """The packed layout's row capacity is per process: every test starts from none, whatever ran before."""
    from openclip_ce.training.packing import CAPACITY

    CAPACITY.configure(None)
    yield
    CAPACITY.configure(None)
