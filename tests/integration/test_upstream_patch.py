"""patches/: applies cleanly to the installed open_clip_train; with it, open_clip looks plugins up itself
and the bootstrap stands aside; CE-CLIP training, checkpoint state and resume work through it."""

import re
import sys
from pathlib import Path

import pytest
import torch

from openclip_ce.testing.open_clip_main import patched_copy, pythonpath
from openclip_ce.testing.proc import run, torchrun
from openclip_ce.testing.training_runs import demo_shards, nan_model, tiny_model, train_args

pytestmark = pytest.mark.slow

PATCH = Path(__file__).resolve().parents[2] / "patches" / "open_clip-3.3.0-plugins.patch"


@pytest.fixture(scope="module")
def patched_site(tmp_path_factory):
    import open_clip_train

    site = patched_copy(Path(open_clip_train.__file__).parents[1], ("open_clip_train",), PATCH,
                        tmp_path_factory.mktemp("patched-site"))
    assert (site / "open_clip_train" / "plugins.py").exists()
    return site


def test_bootstrap_stands_aside_when_open_clip_has_the_lookup(patched_site):
    code = ("import open_clip_train.main as m, open_clip_train;"
            "from openclip_ce.integration import parser_hook as c;"
            "print(open_clip_train.__file__, c.parser_hook_installed(), not hasattr(m.parse_args, '__wrapped__'))")
    patched = run([sys.executable, "-c", code], PYTHONPATH=pythonpath(patched_site))
    assert patched.returncode == 0, patched.stderr
    path, installed, untouched = patched.stdout.split()
    assert path.startswith(str(patched_site)) and installed == "False" and untouched == "True"
    plain = run([sys.executable, "-c", code])
    assert plain.stdout.split()[1:] == ["True", "False"]  # the same check can fail: unpatched gets wired


def test_training_and_resume_through_the_patched_open_clip(patched_site, tmp_path):
    model, data, logs = tiny_model(tmp_path), demo_shards(tmp_path), tmp_path / "logs"
    args = train_args(model, data, logs, "p", "--loss", "ce_clip", "--dist-backend", "gloo", epochs=1)
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args], PYTHONPATH=pythonpath(patched_site))
    assert proc.returncode == 0, proc.stderr[-4000:]  # also proves the patch's CPU DDP fix
    ckpt = torch.load(logs / "p" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=False)
    state = ckpt["plugin_state"]
    assert set(state["thresholds"]) == {"rel", "att", "act", "obj"}
    assert not (logs / "p" / "checkpoints" / "ce_plugin_state_epoch_1.json").exists()  # bootstrap stood aside
    log = (logs / "p" / "out.log").read_text()
    assert "ce_threshold_rel" in log and "Imc_loss" in log
    assert "captions and valid negatives are packed into rows" in log  # adapt_model(args, model) reached the adapter
    assert "packed text batches padded to" in log  # train_collate laid the batches out, the trainer moved them

    args[args.index("--epochs") + 1] = "2"
    proc = run([sys.executable, "-m", "open_clip_train.main", *args, "--resume", "latest"], PYTHONPATH=pythonpath(patched_site))
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "p" / "out.log").read_text()
    assert f"ce_clip: restored plugin state from {logs / 'p' / 'checkpoints' / 'epoch_1.pt'}: {state}" in log
    assert (logs / "p" / "checkpoints" / "epoch_2.pt").exists(), proc.stderr[-3000:]


def test_a_nan_loss_stops_every_rank_at_the_same_step_in_one_line_through_the_patch(patched_site, tmp_path):
    """Two ranks, a model with one NaN weight: both stop at step 1 with one line each (the patch logs a
    plugin's stop and exits 2, where it gave a traceback and exit 1); no checkpoint is written."""
    logs = tmp_path / "logs"
    args = train_args(nan_model(tmp_path), demo_shards(tmp_path, 2, 8), logs, "nan", "--loss", "ce_clip",
                      "--dist-backend", "gloo", "--log-every-n-steps", "3", samples=16, batch=4)
    proc = torchrun(2, ["-m", "open_clip_train.main", "--", *args], PYTHONPATH=pythonpath(patched_site))
    assert proc.returncode != 0
    stops = [l for l in proc.stderr.splitlines() if "| ERROR |" in l and "not finite" in l]
    assert len(stops) == 2 and all("since optimizer step 1; stopped at step 1" in l for l in stops), proc.stderr[-4000:]
    # torchrun's report: the ranks exit 2 themselves; one that is still on its way out when the other has exited
    # is ended by torchrun (-15), after its own stop line above
    codes = re.findall(r"exitcode\s*: (-?\d+)", proc.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, proc.stderr[-4000:]
    assert not re.findall(r'File "[^"]*(open_clip_train|openclip_ce)/', proc.stderr)  # no rank's traceback
    assert not list((logs / "nan" / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def broken_plugins(tmp_path_factory):
    """A site dir announcing two third-party plugins: one whose import fails, one without the methods."""
    site = tmp_path_factory.mktemp("broken-site")
    (site / "broken_plugin_mod.py").write_text("raise ImportError('boom: a missing dependency')\n")
    (site / "incomplete_plugin_mod.py").write_text("class P:\n    name = 'incomplete'\n\nplugin = P()\n")
    dist = site / "broken_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[open_clip_train.plugins]\nbroken = broken_plugin_mod:plugin\n"
                                          "incomplete = incomplete_plugin_mod:plugin\n")
    return site


@pytest.mark.parametrize("lookup", ["bootstrap", "patched"])
def test_a_broken_third_party_plugin_is_left_out_the_same_way_by_both_lookups(lookup, broken_plugins, request):
    path = pythonpath(broken_plugins) if lookup == "bootstrap" else pythonpath(request.getfixturevalue("patched_site"), broken_plugins)
    help_ = run([sys.executable, "-m", "open_clip_train.main", "--help"], PYTHONPATH=path)
    assert help_.returncode == 0, help_.stderr[-3000:]
    assert "--ce-alpha" in help_.stdout  # our plugin still there
    warned = [l for l in help_.stderr.splitlines() if "warning: training plugin" in l]
    assert len(warned) == 2 and any("'broken' left out" in l and "boom" in l for l in warned), help_.stderr
    assert any("'incomplete' left out" in l for l in warned)
    chosen = run([sys.executable, "-m", "open_clip_train.main", "--loss", "broken"], PYTHONPATH=path)
    assert chosen.returncode == 2 and "training plugin 'broken' is not available" in chosen.stderr
    assert "Traceback" not in chosen.stderr
