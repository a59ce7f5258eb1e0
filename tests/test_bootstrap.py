"""The .pth import hook: installed, free when open_clip is not used, and wired on open_clip_train.main."""

import sys
import types

from tests._proc import run


def test_pth_hook_is_installed_and_costs_nothing_without_open_clip():
    code = ("import sys; print(any(type(f).__name__ == 'OpenClipPluginFinder' for f in sys.meta_path));"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'open_clip_train', 'numpy')"
            " or m.startswith('openclip_ce.')))")
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    hooked, modules = proc.stdout.splitlines()
    assert hooked == "True"
    assert modules == "['openclip_ce.bootstrap']"  # nothing heavy imported at start-up
    off = run([sys.executable, "-c", code], OPENCLIP_CE_DISABLE="1")
    assert off.stdout.splitlines()[0] == "False"


def test_hook_wires_when_open_clip_train_main_is_imported():
    code = ("import open_clip_train.main as m, open_clip;"
            "print(hasattr(m.parse_args, '__wrapped__'), hasattr(open_clip.create_loss, '__wrapped__'))")
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
    off = run([sys.executable, "-c", code], OPENCLIP_CE_DISABLE="1")
    assert off.stdout.split() == ["False", "False"]


def test_wandb_and_tensorboard_proxies_add_plugin_metrics():
    from openclip_ce.openclip_compat import _TensorBoardProxy, _WandbProxy

    logged = []
    fake_wandb = types.SimpleNamespace(log=lambda data, step=None: logged.append((data, step)), run="RUN")
    proxy = _WandbProxy(fake_wandb, lambda: {"ce_threshold_rel": 1.5})
    proxy.log({"train/lr": 0.1}, step=7)
    assert logged == [({"train/lr": 0.1, "train/ce_threshold_rel": 1.5}, 7)]
    assert proxy.run == "RUN"

    scalars = []
    writer = types.SimpleNamespace(add_scalar=lambda n, v, s: scalars.append((n, v, s)))
    tb = _TensorBoardProxy(writer, lambda: {"ce_valid_obj": 0.5})
    tb.add_scalar("train/lr", 0.1, 3)
    tb.add_scalar("train/loss", 2.0, 3)
    tb.add_scalar("train/lr", 0.1, 4)
    assert scalars == [("train/lr", 0.1, 3), ("train/ce_valid_obj", 0.5, 3), ("train/loss", 2.0, 3),
                       ("train/lr", 0.1, 4), ("train/ce_valid_obj", 0.5, 4)]
