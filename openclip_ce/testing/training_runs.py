"""Shared helpers for the training-side tests: tiny model, shards with negatives, open_clip args and data."""

import argparse
import io
import json
import random
import re
import sys
import tarfile
from pathlib import Path

from openclip_ce.testing.toy_shards import make_sample, write_demo_shards
from openclip_ce.negatives import encode_negatives
from openclip_ce.testing.proc import run
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

# a console line of a ce_clip run: every term and a threshold logged, the act type without valid negatives
TRAIN_LINE = re.compile(r"Train Epoch: .*Contrastive_loss.*Imc_loss.*Cmr_loss.*ce_threshold_rel: \S+.*ce_valid_act: 0 ")


def tiny_model(tmp_path) -> str:
    return write_tiny_model_dir(Path(tmp_path) / "model")


def nan_model(tmp_path) -> str:
    """A tiny model folder whose weights (open_clip loads them from the folder) hold one NaN."""
    import open_clip
    import torch

    name = write_tiny_model_dir(Path(tmp_path) / "nan_model")
    sd = open_clip.create_model(name).state_dict()
    sd["visual.proj"].view(-1)[0] = float("nan")
    torch.save(sd, Path(tmp_path) / "nan_model" / "open_clip_pytorch_model.bin")
    return name


def demo_shards(tmp_path, num_shards=4, per_shard=16):
    write_demo_shards(Path(tmp_path) / "shards", num_shards, per_shard)
    return str(Path(tmp_path) / "shards" / f"{{00000..{num_shards - 1:05d}}}.tar")


def write_shard(path, samples):
    """samples: list of (key, {ext: bytes})."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def sample_members(rng, neg="ok"):
    caption, jpg, negs = make_sample(rng)
    members = {"jpg": jpg, "txt": caption.encode()}
    if neg == "ok":
        members["neg.json"] = encode_negatives(negs)
    elif neg == "malformed":
        members["neg.json"] = b'{"rel": 3, "att": null'
    elif neg == "unknown-type":
        members["neg.json"] = json.dumps({"rel": "x", "colour": "y"}).encode()
    return members


def train_args(model, train_data, logs, name, *extra, samples=64, batch=8, epochs=1):
    return [
        "--model", model, "--train-data", train_data, "--dataset-type", "webdataset",
        "--train-num-samples", str(samples), "--batch-size", str(batch), "--epochs", str(epochs),
        "--workers", "1", "--device", "cpu", "--precision", "fp32", "--lr", "1e-3", "--warmup", "1",
        "--logs", str(logs), "--name", name, "--log-every-n-steps", "1", "--seed", "0", *extra,
    ]


def csv_with_negatives(tmp_path, n=16):
    """A csv with hard-negative columns (some placeholders), captions of varied lengths."""
    from openclip_ce.testing.toy_shards import make_sample

    rng = random.Random(6)
    rows = ["filepath\ttitle\tneg_rel\tneg_att\tneg_act\tneg_obj"]
    for i in range(n):
        caption, jpg, negs = make_sample(rng)
        if i % 3 == 0:  # longer captions, so that the batch has several length groups
            caption += " on a wide grey table next to a window in a large and quiet room" * (1 + i % 2)
        (tmp_path / f"n{i}.jpg").write_bytes(jpg)
        rows.append("\t".join([str(tmp_path / f"n{i}.jpg"), caption] + [negs[t] or "" for t in ("rel", "att", "act", "obj")]))
    (tmp_path / "neg.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "neg.csv")


class EpochLoader(list):
    """The batches of one epoch, as open_clip's ``train_one_epoch`` reads a dataloader."""

    def __init__(self, batches, batch_size):
        super().__init__(batches)
        self.num_batches = len(batches)
        self.num_samples = len(batches) * batch_size


class EpochData:
    """``data["train"]`` for open_clip's ``train_one_epoch``."""

    def __init__(self, loader):
        self.dataloader = loader

    def set_epoch(self, epoch):
        pass


def train_step_args(accum, batch):
    """open_clip's arguments for ``train_one_epoch`` on CPU with ``--loss ce_clip``, every plugin flag at its
    default but ``--ce-schedule off``."""
    from openclip_ce.training.plugin import plugin

    ns = argparse.Namespace(
        device="cpu", precision="fp32", accum_freq=accum, distill=False, skip_scheduler=True, horovod=False,
        grad_clip_norm=None, log_every_n_steps=1, world_size=1, rank=0, local_rank=0, batch_size=batch,
        wandb=False, local_loss=False, gather_with_grad=False, loss="ce_clip",
    )
    p = argparse.ArgumentParser()
    plugin.add_arguments(p)
    # every CE term from step 1 (the model here starts random, where --ce-schedule auto would gate IMC and CMR)
    for k, v in vars(p.parse_args(["--ce-schedule", "off"])).items():
        setattr(ns, k, v)
    return ns


def toy_batch_texts(n=8, seed=0, without_negatives=3):
    """``n`` encoded caption bundles of the toy world (caption and its negatives), sample ``without_negatives``
    with every negative a placeholder."""
    from openclip_ce.training.data import encode_bundle

    rng = random.Random(seed)
    texts = []
    for i in range(n):
        caption, _, negs = make_sample(rng)
        if i == without_negatives:
            negs = {k: None for k in negs}
        texts.append(encode_bundle(caption, negs))
    return texts


def train_full_and_accumulated(base, images, tokens, make_args, check_loss=lambda loss: None):
    """One optimizer step of open_clip's ``train_one_epoch`` on the whole batch (``--accum-freq 1``) and on its
    two halves (``--accum-freq 2``), each from a copy of ``base``, with the plugin's model and loss for
    ``make_args(accum, batch)``: ``{accum: (parameters, thresholds)}``."""
    import copy

    import torch
    from open_clip_train.train import train_one_epoch

    from openclip_ce.training.plugin import plugin

    n = len(images)
    results = {}
    for accum, batches in ((1, [(images, tokens)]),
                           (2, [(images[:n // 2], tokens[:n // 2]), (images[n // 2:], tokens[n // 2:])])):
        model = copy.deepcopy(base)
        args = make_args(accum, n // accum)
        plugin.adapt_model(args, model)
        loss = plugin.create_loss(args)
        check_loss(loss)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        train_one_epoch(model, {"train": EpochData(EpochLoader(batches, n // accum))}, loss, 0, opt, None, None,
                        None, args)
        results[accum] = (dict(model.named_parameters()), loss.threshold_dict())
    return results


def parse_many(argvs):
    """Parse several command lines with open_clip's parse_args, through the import hook, in one process."""
    code = f"""
import json, sys, io, contextlib
import open_clip_train.main
from open_clip_train.params import parse_args
out = []
for argv in {argvs!r}:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parse_args(argv)
        out.append({{"ok": True, "loss": getattr(ns, "loss", None), "dist": ns.loss_dist_impl,
                     "alpha": getattr(ns, "ce_alpha", None), "types": list(getattr(ns, "ce_neg_types", []))}})
    except SystemExit as e:
        out.append({{"ok": False, "code": e.code, "err": err.getvalue()}})
print(json.dumps(out))
"""
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def no_negatives_args(tmp_path, *extra):
    """open_clip args of a ce_clip run on 104 samples without a ``neg.json`` (batch 2: 52 optimizer steps, past
    the no-negatives guard's 50), logging every 100 steps; ``extra`` flags appended."""
    rng = random.Random(4)
    write_shard(Path(tmp_path) / "plain.tar", [(f"k{i}", sample_members(rng, "missing")) for i in range(104)])
    return train_args(tiny_model(tmp_path), str(Path(tmp_path) / "plain.tar"), Path(tmp_path) / "logs", "none",
                      "--loss", "ce_clip", "--log-every-n-steps", "100", *extra, samples=104, batch=2)
