"""A CE-CLIP training step on a tiny ViT-B/32-shaped CLIP, run compiled and eagerly side by side.

The tests of a GPU's terms (no host read, one compiled graph) train the same step twice: ``torch.compile``
(``aot_eager``: graph capture and autograd tracing as inductor gets them, without generating C++) on one
copy, eager on another, same inputs, and compare the losses step by step.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch


def tiny_clip(pack: bool = True):
    """``(model, text spec)``: open_clip's CLIP at the tiny ViT-B/32 shape, seeded, adapted by the plugin."""
    from open_clip.model import CLIP

    from ..training.adapter import adapt_model
    from .tiny_clip import TINY_VIT_B_32_CFG

    torch.manual_seed(0)
    model = CLIP(**copy.deepcopy(TINY_VIT_B_32_CFG), output_dict=True)
    return model, adapt_model(model, pack=pack)


def step(model, loss, images, text):
    """One forward and loss (the sum of the loss dict), as open_clip's training step computes it."""
    return sum(loss(**model(images, text), output_dict=True).values())


def compiled_against_eager(model, loss, eager_model, eager_loss, batches: Sequence,
                           after_step: Optional[Callable[[], None]] = None):
    """Train ``batches`` through the compiled step (``model``, ``loss``) and the eager one (``eager_*``),
    asserting equal losses at every step (``after_step`` checks more); returns the compile counter."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, backend=counter, fullgraph=True)  # fullgraph: a graph break is an error
    torch.manual_seed(1)
    for batch in batches:
        images, text = torch.randn(8, 3, 32, 32), batch.to("cpu")
        got, want = compiled(model, loss, images, text), step(eager_model, eager_loss, images, text)
        got.backward()
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        if after_step is not None:
            after_step()
    return counter
