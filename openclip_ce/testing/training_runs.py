"""Shared helpers for the training-side tests: tiny model, shards with negatives, open_clip args."""

import io
import json
import random
import tarfile
from pathlib import Path

from openclip_ce.testing.toy_shards import make_sample, write_demo_shards
from openclip_ce.negatives import encode_negatives
from openclip_ce.testing.tiny_clip import write_tiny_model_dir


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
