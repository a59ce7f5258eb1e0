"""Dependency floors that keep code in downloaded files from running (pyproject.toml)."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# package -> (lowest version allowed, why): each floor is the first release without the flaw
FLOORS = {
    # torch.load unpickles by default before 2.6 (open_clip's --resume passes no weights_only), CVE-2025-32434
    # (weights_only=True bypass) is fixed in 2.6.0, CVE-2026-24747 (weights_only unpickler) in 2.10.0
    "torch": (2, 10),
    "torchvision": (0, 25),  # the release paired with torch 2.10
    "pyarrow": (14, 0, 1),  # CVE-2023-47248: code execution reading untrusted Parquet / IPC, fixed in 14.0.1
}


def _floors(requirements):
    """{package: lower bound as a tuple} of ``>=`` requirements; an unbounded one maps to None."""
    out = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", req.split(";")[0].strip())
        name, spec = m.group(1).lower(), m.group(3)
        low = re.search(r">=\s*([0-9][0-9.]*)", spec)
        out[name] = tuple(int(x) for x in low.group(1).rstrip(".").split(".")) if low else None
    return out


def _all_requirements():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    return {g: _floors(reqs) for g, reqs in groups.items()}


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_every_requirement_of_the_package_has_the_safe_floor(package):
    listed = {g: f[package] for g, f in _all_requirements().items() if package in f}
    assert listed, f"{package} is not a requirement in {PYPROJECT.name}"
    for group, low in listed.items():
        assert low is not None and low >= FLOORS[package], \
            f"{PYPROJECT.name} [{group}]: {package} allows versions below {'.'.join(map(str, FLOORS[package]))} ({low})"


def test_the_floors_are_explained_where_they_are_set():
    text = PYPROJECT.read_text()
    for cve in ("CVE-2025-32434", "CVE-2026-24747", "CVE-2023-47248"):
        assert cve in text, f"{PYPROJECT.name} raises a floor for {cve} without saying so"
