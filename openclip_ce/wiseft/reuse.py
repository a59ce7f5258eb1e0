"""A :class:`~openclip_ce.evaluate.scorer.ClipScorer` for a series of models that see the same inputs.

``openclip-ce sweep`` evaluates one benchmark with several interpolated weights in a row. Only the
model changes between them, so what comes before the model is done once per benchmark:

* **images**: each distinct image (or crop) is decoded and put through the model's preprocess once;
  what is kept is the output of the PIL steps (resize, crop, RGB) as uint8 pixels, 4x smaller than
  the float tensor. ``ToTensor`` and ``Normalize`` (the same transform objects, on the batch) are
  applied again for every model, which reproduces ``preprocess`` bit for bit. A preprocess of another
  shape is cached as its float output. The cache holds at most ``cache_bytes``; images beyond that
  are decoded again for every model (one warning says so).
* **texts**: each distinct caption or prompt is tokenized once (:class:`CachedTokenizer`, also the
  scorer's ``tokenizer``, so zero-shot prompt tokenization is reused as well).

Batches are the ones :class:`ClipScorer` forms (consecutive distinct inputs, ``batch_size`` each),
so every feature equals the plain scorer's. Not reused: the images of zero-shot datasets, which
clip_benchmark / torchvision datasets decode inside their own loaders.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor
from torchvision.transforms.functional import pil_to_tensor

from ..evaluate.common import ImageRef, progress
from ..evaluate.scorer import ClipScorer, load_image

log = logging.getLogger(__name__)


class CachedTokenizer:
    """Wraps an open_clip tokenizer; each distinct text is tokenized once (rows are independent of the batch)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.rows: Dict[str, torch.Tensor] = {}
        self.tokenized = self.reused = 0

    def __call__(self, texts, context_length: Optional[int] = None):
        if context_length is not None:
            return self.tokenizer(texts, context_length=context_length)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return self.tokenizer(texts)
        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            for t, row in zip(new, self.tokenizer(new)):
                self.rows[t] = row.clone()
        self.tokenized += len(new)
        self.reused += len(texts) - len(new)
        return torch.stack([self.rows[t] for t in texts])

    def clear(self) -> None:
        self.rows.clear()

    def __getattr__(self, name):  # context_length, sot_token_id, ... of the wrapped tokenizer
        if name == "tokenizer":
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def split_preprocess(preprocess) -> Optional[Tuple[Compose, List[Normalize]]]:
    """``(PIL steps, Normalize steps)`` when ``preprocess`` is PIL steps, one ToTensor, then only
    Normalize (open_clip's eval transforms) and the PIL steps turn an RGB image into an RGB image."""
    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, Compose) or not steps:
        return None
    at = [i for i, t in enumerate(steps) if isinstance(t, ToTensor)]
    if len(at) != 1 or not all(isinstance(t, Normalize) for t in steps[at[0] + 1:]):
        return None
    head = Compose(list(steps[:at[0]]))
    probe = head(Image.new("RGB", (61, 47), (10, 20, 30)))
    if not isinstance(probe, Image.Image) or probe.mode != "RGB":
        return None
    return head, list(steps[at[0] + 1:])


class _FormDataset:
    """What is cached of each image: uint8 pixels after the PIL steps, or the full preprocess output."""

    def __init__(self, refs: Sequence[ImageRef], preprocess, head: Optional[Compose]):
        self.refs, self.preprocess, self.head = list(refs), preprocess, head

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        img = load_image(self.refs[i])
        return pil_to_tensor(self.head(img)) if self.head is not None else self.preprocess(img)


class ReusingScorer(ClipScorer):
    """ClipScorer whose preprocessed images and tokenized texts outlive one model (module docstring).

    Swap the weights of ``model`` in place between calls; :meth:`clear` when the inputs change
    (the sweep clears after each benchmark)."""

    def __init__(self, model, preprocess, tokenizer, device: str = "cpu", batch_size: int = 64,
                 workers: int = 2, precision: str = "fp32", cache_bytes: int = 8 << 30):
        super().__init__(model, preprocess, CachedTokenizer(tokenizer), device, batch_size, workers, precision)
        split = split_preprocess(preprocess)
        self.head, self.tail = split if split is not None else (None, None)
        self.cache_bytes, self.cached_bytes = int(cache_bytes), 0
        self.images: Dict[ImageRef, torch.Tensor] = {}
        self.images_loaded = self.images_reused = 0
        self._warned_full = False

    def clear(self) -> None:
        self.images.clear()
        self.cached_bytes = 0
        self._warned_full = False
        self.tokenizer.clear()

    def stats(self) -> Dict[str, int]:
        return {"images_decoded": self.images_loaded, "images_reused": self.images_reused,
                "texts_tokenized": self.tokenizer.tokenized, "texts_reused": self.tokenizer.reused}

    def _keep(self, ref: ImageRef, form: torch.Tensor) -> None:
        size = form.nelement() * form.element_size()
        if self.cached_bytes + size <= self.cache_bytes:
            self.images[ref] = form.clone()
            self.cached_bytes += size
        elif not self._warned_full:
            self._warned_full = True
            log.warning("image cache full (%.1f GB, --image-cache-gb): further images are decoded again for every alpha",
                        self.cached_bytes / 2 ** 30)

    def _fresh(self, refs: List[ImageRef]) -> Iterator[torch.Tensor]:
        """Forms of ``refs`` in order, decoded by ``workers`` processes (the cache stays in this one)."""
        if not refs:
            return
        loader = torch.utils.data.DataLoader(_FormDataset(refs, self.preprocess, self.head), batch_size=self.batch_size,
                                             shuffle=False, num_workers=self.workers, persistent_workers=False)
        for batch in loader:
            yield from batch

    def _finish(self, batch: torch.Tensor) -> torch.Tensor:
        """ToTensor's scaling and the Normalize steps, on the batch: ``preprocess`` bit for bit."""
        if self.tail is None:
            return batch
        x = batch.to(dtype=torch.get_default_dtype()).div(255)
        for t in self.tail:
            x = t(x)
        return x

    def encode_images(self, refs: Sequence[ImageRef], desc: str = "images"):
        refs = list(refs)
        distinct = list(dict.fromkeys(refs))
        feats = self._encode_distinct(distinct, desc)
        if len(distinct) == len(refs):
            return feats
        index = {r: i for i, r in enumerate(distinct)}
        return feats[[index[r] for r in refs]]

    def _encode_distinct(self, refs: List[ImageRef], desc: str):
        todo = [r for r in refs if r not in self.images]
        fresh = self._fresh(todo)
        self.images_loaded += len(todo)
        self.images_reused += len(refs) - len(todo)
        starts = range(0, len(refs), self.batch_size)
        feats = []
        try:
            with torch.no_grad(), self._autocast():
                for s in progress(starts, total=len(starts), desc=f"{desc} (images)", unit="batch"):
                    forms = []
                    for ref in refs[s:s + self.batch_size]:
                        form = self.images.get(ref)
                        if form is None:
                            form = next(fresh)
                            self._keep(ref, form)
                        forms.append(form)
                    batch = self._finish(torch.stack(forms).to(self.device))
                    feats.append(F.normalize(self.model.encode_image(batch).float(), dim=-1).cpu())
        finally:
            fresh.close()  # shuts the loader's worker processes down, also on an error
        return torch.cat(feats) if feats else torch.zeros(0, 0)
