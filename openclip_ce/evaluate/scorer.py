"""Batched image/text encoding and the similarity matrix every benchmark reader asks for.

A reader hands over :class:`~openclip_ce.evaluate.common.Case` objects (an image, optionally
cropped, and the captions to rank); the scorer encodes every distinct image and every distinct
caption once, in batches, with the model's own preprocess and tokenizer (which truncates to the
context length as open_clip does), in eval mode under ``torch.no_grad``, and returns the cosine
similarities ``S[i, k] = <f(image_i), g(text_ik)>``.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .common import BenchmarkDataError, Case, ImageRef, progress


def load_image(ref: ImageRef):
    """RGB PIL image of ``ref``, cropped to its box (clamped to the image) when it has one."""
    try:
        with Image.open(ref.path) as im:
            img = im.convert("RGB")
    except Exception as e:
        where = f"{ref.origin}: " if ref.origin else ""
        raise BenchmarkDataError(f"{where}cannot read image {ref.path} ({type(e).__name__}: {e})") from e
    if ref.box is not None:
        left, upper, right, lower = ref.box
        w, h = img.size
        left, upper = max(0, int(round(left))), max(0, int(round(upper)))
        right, lower = min(w, int(round(right))), min(h, int(round(lower)))
        if right <= left or lower <= upper:
            raise BenchmarkDataError(f"{ref.origin}: crop box {ref.box} is empty inside {ref.path} ({w}x{h})")
        img = img.crop((left, upper, right, lower))
    return img


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

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)

    def encode_images(self, refs: Sequence[ImageRef], desc: str = "images"):
        return self.encode_image_dataset(_ImageDataset(refs, self.preprocess), desc)

    def encode_image_dataset(self, dataset, desc: str = "images"):
        """Normalised features of a map-style dataset of preprocessed image tensors, in order."""
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False,
            num_workers=self.workers, persistent_workers=False,
        )
        feats = []
        with torch.no_grad(), self._autocast():
            for batch in progress(loader, total=len(loader), desc=f"{desc} (images)", unit="batch"):
                feats.append(F.normalize(self.model.encode_image(batch.to(self.device)).float(), dim=-1).cpu())
        return torch.cat(feats) if feats else torch.zeros(0, 0)

    def encode_texts(self, texts: Sequence[str], desc: str = "texts"):
        feats = []
        chunks = [texts[i:i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        with torch.no_grad(), self._autocast():
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
