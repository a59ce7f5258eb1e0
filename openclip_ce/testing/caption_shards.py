"""WebDataset shards of tiny images and given captions: the input of make-shards in the tests, the
benchmarks and the GPU checks (one writer for all of them)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from .tiny_mlm import SAMPLE_CAPTIONS


def jpeg(seed: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (8, 8), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def write_tar(path, members):
    """members: list of (name, bytes) in order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o640
            tar.addfile(info, io.BytesIO(data))


def caption_members(key: str, caption, i: int):
    out = [(f"{key}.jpg", jpeg(i))]
    if caption is not None:
        out.append((f"{key}.txt", caption if isinstance(caption, bytes) else caption.encode("utf-8")))
    out.append((f"{key}.json", b'{"i": %d}' % i))
    return out


def write_caption_shards(root, num_shards=3, per_shard=20, prefix="", captions=SAMPLE_CAPTIONS):
    """Shards ``root/{prefix}00000.tar``...; sample i of shard s gets caption ``captions[(s*per_shard+i) % n]``."""
    paths = []
    for s in range(num_shards):
        members = []
        for i in range(per_shard):
            n = s * per_shard + i
            members += caption_members(f"s{s:03d}_{i:05d}", captions[n % len(captions)], n)
        path = Path(root) / f"{prefix}{s:05d}.tar"
        write_tar(path, members)
        paths.append(str(path))
    return paths


def read_tar(path):
    """[(name, bytes)] of a tar, in order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
