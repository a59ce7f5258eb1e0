"""Version support in one place: the table picks the wiring, and each wiring's list of the open_clip
names, signatures and formats it relies on holds on the open_clip it was written for (and fails, one
clear line per thing, on the other one)."""

import json
import sys
import types

import pytest

from openclip_ce.integration import versions
from openclip_ce.integration.requires import Needs, problems
from openclip_ce.testing.proc import run
from openclip_ce.testing.open_clip_main import pythonpath

_PROBLEMS = """
import json, sys
from openclip_ce.integration import openclip33, openclip4, versions
from openclip_ce.integration.requires import problems
print(json.dumps({"version": versions.openclip_version(), "wiring": versions.wiring_for(versions.openclip_version()).module,
                  "openclip33": problems(openclip33.REQUIRES), "openclip4": problems(openclip4.REQUIRES)}))
"""


def _check_in(*path):
    proc = run([sys.executable, "-c", _PROBLEMS], PYTHONPATH=pythonpath(*path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_version_table_picks_one_wiring_per_supported_version():
    pick = {v: getattr(versions.wiring_for(v), "module", None) for v in
            ("3.3.0", "3.3.7", "4.2.0.dev0", "4.3.1", "3.2.0", "3.4.0", "4.1.0", "5.0.0", "garbage")}
    assert pick == {"3.3.0": "openclip_ce.integration.openclip33", "3.3.7": "openclip_ce.integration.openclip33",
                    "4.2.0.dev0": "openclip_ce.integration.openclip4", "4.3.1": "openclip_ce.integration.openclip4",
                    "3.2.0": None, "3.4.0": None, "4.1.0": None, "5.0.0": None, "garbage": None}
    for wiring in versions.WIRINGS:
        assert wiring.gives and wiring.tested_on
    msg = versions.unsupported_message("3.2.0")
    assert "supports open_clip_torch 3.3.x and 4.x from 4.2.0.dev0 (main)" in msg and "3.2.0 is installed" in msg


def test_the_33_wiring_holds_on_the_installed_open_clip_and_the_main_wiring_does_not():
    if versions.wiring_for(versions.openclip_version()) is not versions.WIRINGS[0]:
        pytest.skip(f"installed open_clip is {versions.openclip_version()}, not 3.3.x")
    got = _check_in()
    assert got["wiring"] == "openclip_ce.integration.openclip33" and got["openclip33"] == []
    # the check can fail: main's wiring relies on what 3.3 does not have, and says so per name
    assert any(p.startswith("open_clip.factory.create_task is gone") for p in got["openclip4"]), got["openclip4"]
    assert any("CLIPTask" in p for p in got["openclip4"])


def test_the_main_wiring_holds_on_open_clip_main_and_the_33_wiring_does_not(main_src):
    got = _check_in(main_src)
    # the version is that of the open_clip on the path, not the installed distribution's (3.3.0 here)
    assert got["version"] == "4.2.0.dev0" and got["wiring"] == "openclip_ce.integration.openclip4"
    assert got["openclip4"] == []
    assert any("no longer looks up create_loss" in p for p in got["openclip33"]), got["openclip33"]
    assert any("open_clip_train.train.train_one_epoch takes (state, data, args, tb_writer)" in p
               for p in got["openclip33"]), got["openclip33"]


def test_a_requirement_that_moved_is_one_line_naming_it_and_why():
    mod = types.ModuleType("fake_open_clip_mod")
    exec("def f(a, b):\n    return helper(a) + 'Train Epoch: '\n\ndef helper(x):\n    return x\n", mod.__dict__)
    sys.modules["fake_open_clip_mod"] = mod
    try:
        ok = [Needs("fake_open_clip_mod", "f", "wraps it", params=("a", "b"), looks_up=("helper",),
                    constants=("Train Epoch: ",))]
        assert problems(ok) == []
        bad = [Needs("fake_open_clip_mod", "f", "wraps it", params=("a", "c"), keywords=("tokenizer",),
                     looks_up=("tarfile_to_samples_nothrow",), constants=("Train Step",)),
               Needs("fake_open_clip_mod", "gone", "swaps it")]
        got = problems(bad)
        assert got == [
            "fake_open_clip_mod.f takes (a, b), not (a, c, ...); the wiring wraps it",
            "fake_open_clip_mod.f has no parameter tokenizer; the wiring wraps it",
            "fake_open_clip_mod.f no longer looks up tarfile_to_samples_nothrow when it runs; the wiring wraps it",
            "fake_open_clip_mod.f no longer contains 'Train Step'; the wiring wraps it",
            "fake_open_clip_mod.gone is gone (AttributeError: module 'fake_open_clip_mod' has no attribute 'gone'); "
            "the wiring swaps it",
        ]
    finally:
        del sys.modules["fake_open_clip_mod"]
