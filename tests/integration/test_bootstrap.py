"""The .pth import hook: installed, free when open_clip is not used, wired on open_clip_train.main, and
invisible to runs that do not select a plugin loss."""

import json
import sys
import types

from openclip_ce.testing.proc import run


def test_pth_hook_is_installed_and_costs_nothing_without_open_clip():
    code = ("import sys; print(any(type(f).__name__ == 'OpenClipPluginFinder' for f in sys.meta_path));"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'open_clip_train', 'numpy')"
            " or m.startswith('openclip_ce.')))")
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    hooked, modules = proc.stdout.splitlines()
    assert hooked == "True"
    # nothing heavy: the hook and its leaf of environment switches
    assert modules == "['openclip_ce.integration', 'openclip_ce.integration.bootstrap', 'openclip_ce.integration.switch']"
    off = run([sys.executable, "-c", code], OPENCLIP_CE_DISABLE="1")
    assert off.stdout.splitlines()[0] == "False"


# After parsing a command line in-process: which open_clip objects are still open_clip's own.
_OBJECTS = """
import json, sys, logging, torch
import open_clip, open_clip_train.data as oc_data, open_clip_train.train as oc_train
import open_clip_train.main as m
from open_clip_train.params import parse_args
ddp = torch.nn.parallel.DistributedDataParallel
ns = parse_args(sys.argv[1:])
print(json.dumps({
    "loss": getattr(ns, "loss", None),
    "ce_flags": sorted(k for k in vars(ns) if k.startswith("ce_")),
    "parse_args_hooked": hasattr(m.parse_args, "__wrapped__"),
    "create_loss_stock": m.create_loss is open_clip.create_loss,
    "train_one_epoch_stock": m.train_one_epoch is oc_train.train_one_epoch,
    "get_dataset_fn_stock": not hasattr(oc_data.get_dataset_fn, "__wrapped__"),
    "root_filters": len(logging.getLogger().filters),
    "ddp_stock": torch.nn.parallel.DistributedDataParallel is ddp,
}))
"""


def _objects(*argv, **env):
    proc = run([sys.executable, "-c", _OBJECTS, "--model", "ViT-B-32", *argv], **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_without_a_plugin_loss_keeps_every_open_clip_object():
    stock = {"create_loss_stock": True, "train_one_epoch_stock": True, "get_dataset_fn_stock": True,
             "root_filters": 0, "ddp_stock": True, "ce_flags": []}
    for argv in ([], ["--loss", "clip"]):
        got = _objects(*argv)
        assert got["loss"] == "clip" and got["parse_args_hooked"]
        assert {k: got[k] for k in stock} == stock, (argv, got)
    ce = _objects("--loss", "ce_clip")
    assert ce["loss"] == "ce_clip" and "ce_alpha" in ce["ce_flags"]
    assert not ce["create_loss_stock"] and not ce["train_one_epoch_stock"] and not ce["get_dataset_fn_stock"]
    assert ce["root_filters"] == 1
    # the CPU DDP fix only where stock open_clip fails outright (a --device cpu run)
    assert ce["ddp_stock"] and not _objects("--device", "cpu")["ddp_stock"]
    off = _objects(OPENCLIP_CE_DISABLE="1")
    assert off["loss"] is None and not off["parse_args_hooked"]


def test_wandb_and_tensorboard_proxies_add_plugin_metrics():
    from openclip_ce.integration.reporting import TensorBoardProxy, WandbProxy

    logged = []
    fake_wandb = types.SimpleNamespace(log=lambda data, step=None: logged.append((data, step)), run="RUN")
    proxy = WandbProxy(fake_wandb, lambda: {"ce_threshold_rel": 1.5})
    proxy.log({"train/lr": 0.1}, step=7)
    assert logged == [({"train/lr": 0.1, "train/ce_threshold_rel": 1.5}, 7)]
    assert proxy.run == "RUN"

    scalars = []
    writer = types.SimpleNamespace(add_scalar=lambda n, v, s: scalars.append((n, v, s)))
    tb = TensorBoardProxy(writer, lambda: {"ce_valid_obj": 0.5})
    tb.add_scalar("train/lr", 0.1, 3)
    tb.add_scalar("train/loss", 2.0, 3)
    tb.add_scalar("train/lr", 0.1, 4)
    assert scalars == [("train/lr", 0.1, 3), ("train/ce_valid_obj", 0.5, 3), ("train/loss", 2.0, 3),
                       ("train/lr", 0.1, 4), ("train/ce_valid_obj", 0.5, 4)]
