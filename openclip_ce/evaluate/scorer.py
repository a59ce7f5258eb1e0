"""Batched image/text encoding and the similarity matrix every benchmark reader asks for.

A reader hands over :class:`~openclip_ce.evaluate.common.Case` objects (an image, optionally
cropped, and the captions to rank); the scorer encodes every distinct image and every distinct
caption once, in batches, with the model's own preprocess and tokenizer (which truncates to the
context length as open_clip does), in eval mode under ``torch.no_grad``, and returns the cosine
similarities ``S[i, k] = <f(image_i), g(text_ik)>``.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from ..errors import UserError
from .common import BenchmarkDataError, Case, ImageRef, progress


def load_image(ref: ImageRef):
    """RGB PIL image of ``ref``, cropped to its box when it has one.

    The crop is PIL's own ``Image.crop(box)``, unclamped, exactly as the ARO authors' dataset class
    calls it: the part of a box outside the image comes back black (a box wholly outside gives an
    all-black crop of the box's size), so the model sees the picture the authors' code shows it.
    """
    where = f"{ref.origin}: " if ref.origin else ""
    try:
        if ref.data is None and ref.path.lower().endswith(".npy"):
            img = _npy_image(ref.path)
        else:
            with Image.open(io.BytesIO(ref.data) if ref.data is not None else ref.path) as im:
                img = im.convert("RGB")
    except Exception as e:
        raise BenchmarkDataError(f"{where}cannot read image {ref.path} ({type(e).__name__}: {e})") from e
    if ref.box is not None:
        left, upper, right, lower = ref.box
        # PIL rounds the box to whole pixels; a box under half a pixel wide would be an empty image
        if int(round(right)) - int(round(left)) <= 0 or int(round(lower)) - int(round(upper)) <= 0:
            raise BenchmarkDataError(f"{where}crop box {ref.box} of {ref.path} is empty")
        img = img.crop(ref.box)
    return img


def _npy_image(path: str):
    """A frame stored as a NumPy array (EqBen's YouCook2 frames: ``H x W x 3`` uint8 in BGR order), as an RGB
    PIL image exactly as the EqBen authors' loader makes it: ``Image.fromarray(a[:, :, [2, 1, 0]], "RGB")``."""
    a = np.load(path, allow_pickle=False)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 array, got shape {a.shape} dtype {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a[:, :, [2, 1, 0]]))  # uint8 H x W x 3: mode RGB


# --------------------------------------------------------------------------- loading in worker processes


class _Failure:
    """What a worker hands back instead of a sample it could not load: the one-line reason."""

    def __init__(self, message: str):
        self.message = message


class _Guarded(torch.utils.data.Dataset):
    """``dataset[i]``, or a :class:`_Failure` naming the item (``describe(i)``) when loading it raises.

    An exception raised inside a DataLoader worker reaches the main process wrapped in a
    multi-line "Caught ... in DataLoader worker process" traceback; carrying the failure as data
    lets the main process raise the original one-line message instead."""

    def __init__(self, dataset, describe: Optional[Callable[[int], str]] = None):
        self.dataset, self.describe = dataset, describe

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            return self.dataset[i]
        except UserError as e:
            return _Failure(e.one_line())
        except Exception as e:  # e.g. a corrupt file in a reader that does not name it
            what = self.describe(i) if self.describe else self._default_description(i)
            detail = " ".join(str(e).split())
            return _Failure(f"{what}: {type(e).__name__}: {detail}" if detail else f"{what}: {type(e).__name__}")


    def _default_description(self, i: int) -> str:
        samples = getattr(self.dataset, "samples", None)  # torchvision's ImageFolder & co: (path, target)
        try:
            return f"image {samples[i][0]}"
        except (TypeError, IndexError, KeyError):
            return f"item {i} of {type(self.dataset).__name__}"


def _collate(batch):
    for item in batch:
        if isinstance(item, _Failure):
            return item
    return default_collate(batch)


class CheckedLoader:
    """A DataLoader over ``dataset`` whose unreadable item stops the run with one line naming it
    (:class:`BenchmarkDataError`), with or without worker processes. Iterable, with ``len()``,
    so it can be handed to code that expects a DataLoader (clip_benchmark's ``run_classification``)."""

    def __init__(self, dataset, batch_size: int, workers: int, describe: Optional[Callable[[int], str]] = None):
        self.loader = torch.utils.data.DataLoader(
            _Guarded(dataset, describe), batch_size=batch_size, shuffle=False, num_workers=workers,
            persistent_workers=False, collate_fn=_collate)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, _Failure):
                raise BenchmarkDataError(batch.message)
            yield batch


class _ImageDataset:
    def __init__(self, refs: Sequence[ImageRef], preprocess):
        self.refs, self.preprocess = list(refs), preprocess

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        return self.preprocess(load_image(self.refs[i]))


class ClipScorer:
    """Cosine similarities from an open_clip model (see module docstring)."""

    def __init__(self, model, preprocess, tokenizer, device: str = "cpu", batch_size: int = 64,
                 workers: int = 2, precision: str = "fp32"):
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.device, self.batch_size, self.workers, self.precision = device, batch_size, workers, precision

    def autocast(self):
        """The autocast context of ``--precision`` (``fp32``: none; ``amp``: float16; ``bf16``: bfloat16)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)

    _autocast = autocast  # the name callers used before

    def encode_images(self, refs: Sequence[ImageRef], desc: str = "images"):
        return self.encode_image_dataset(_ImageDataset(refs, self.preprocess), desc)

    def encode_image_dataset(self, dataset, desc: str = "images", describe: Optional[Callable[[int], str]] = None):
        """Normalised features of a map-style dataset of preprocessed image tensors, in order.

        An item that cannot be loaded stops with one line naming it (``describe(i)`` names item i
        when the dataset's own error does not), also when ``--workers`` > 0."""
        loader = CheckedLoader(dataset, self.batch_size, self.workers, describe)
        feats = []
        with torch.no_grad(), self.autocast():
            for batch in progress(loader, total=len(loader), desc=f"{desc} (images)", unit="batch"):
                feats.append(F.normalize(self.model.encode_image(batch.to(self.device)).float(), dim=-1).cpu())
        return torch.cat(feats) if feats else torch.zeros(0, 0)

    def encode_texts(self, texts: Sequence[str], desc: str = "texts"):
        feats = []
        chunks = [texts[i:i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        with torch.no_grad(), self.autocast():
            for chunk in progress(chunks, total=len(chunks), desc=f"{desc} (texts)", unit="batch"):
                tokens = self.tokenizer(list(chunk)).to(self.device)
                feats.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(feats) if feats else torch.zeros(0, 0)

    def score(self, cases: Sequence[Case], desc: str) -> np.ndarray:
        """``S[i, k]`` for every case ``i`` and caption ``k`` (all cases need the same caption count)."""
        if not cases:
            return np.zeros((0, 0))
        k = len(cases[0].texts)
        if any(len(c.texts) != k for c in cases):
            raise ValueError(f"{desc}: cases with different caption counts")
        img_index: Dict[ImageRef, int] = {}
        txt_index: Dict[str, int] = {}
        for c in cases:
            img_index.setdefault(c.image, len(img_index))
            for t in c.texts:
                txt_index.setdefault(t, len(txt_index))
        img = self.encode_images(list(img_index), desc)
        txt = self.encode_texts(list(txt_index), desc)
        ii = np.fromiter((img_index[c.image] for c in cases), dtype=np.int64, count=len(cases))
        tt = np.array([[txt_index[t] for t in c.texts] for c in cases], dtype=np.int64)
        img_np, txt_np = img.numpy().astype(np.float64), txt.numpy().astype(np.float64)
        out = np.empty((len(cases), k), dtype=np.float64)
        for s in range(0, len(cases), 16384):  # bounded memory on 400k-pair benchmarks
            out[s:s + 16384] = np.einsum("nd,nkd->nk", img_np[ii[s:s + 16384]], txt_np[tt[s:s + 16384]])
        return out

    def score_texts(self, pairs: Sequence[Tuple[str, str]], desc: str) -> np.ndarray:
        """``T[i] = <g(a_i), g(b_i)>``: cosine similarity of the two captions of every pair, from the text
        encoder alone (SugarCrepe++'s text-only task). Every distinct caption is encoded once."""
        if not pairs:
            return np.zeros(0)
        index: Dict[str, int] = {}
        for a, b in pairs:
            index.setdefault(a, len(index))
            index.setdefault(b, len(index))
        feats = self.encode_texts(list(index), desc).numpy().astype(np.float64)
        ia = np.fromiter((index[a] for a, _ in pairs), dtype=np.int64, count=len(pairs))
        ib = np.fromiter((index[b] for _, b in pairs), dtype=np.int64, count=len(pairs))
        return np.einsum("nd,nd->n", feats[ia], feats[ib])
