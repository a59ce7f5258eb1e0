"""open_clip's main branch for the tests of its wiring: the vendored source snapshot, extracted once.

The snapshot is ``../shared/vendor/open_clip-main-*.tar.gz`` next to the repository (or the file named
by ``OPENCLIP_MAIN_TARBALL``). Its ``src/`` imports with the packages open_clip_torch 3.3 already
installed (same dependencies), so the tests put it first on ``PYTHONPATH`` in a subprocess: that
process imports main's ``open_clip`` / ``open_clip_train`` and this checkout's ``openclip_ce`` (whose
import hook comes from the environment's ``.pth`` file).
"""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARBALL_ENV = "OPENCLIP_MAIN_TARBALL"
EXPECTED = ROOT.parent / "shared" / "vendor" / "open_clip-main-*.tar.gz"


def main_tarball():
    if os.environ.get(TARBALL_ENV):
        return Path(os.environ[TARBALL_ENV])
    found = sorted(EXPECTED.parent.glob(EXPECTED.name))
    return found[-1] if found else None


def pythonpath(*first) -> str:
    """``first`` ahead of this checkout and of the caller's PYTHONPATH."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([*map(str, first), str(ROOT), *rest])


def patched_copy(src, packages, patch, site) -> Path:
    """``site`` holding a copy of the ``packages`` of ``src`` with ``patch`` applied (it must apply cleanly)."""
    for pkg in packages:
        shutil.copytree(Path(src) / pkg, Path(site) / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    check = subprocess.run(["git", "apply", "--check", str(patch)], cwd=site, capture_output=True, text=True)
    assert check.returncode == 0, f"{Path(patch).name} does not apply to {src}: {check.stderr}"
    subprocess.run(["git", "apply", str(patch)], cwd=site, check=True)
    return Path(site)
