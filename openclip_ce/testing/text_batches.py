"""Token batches ``[B, 1 + K, 77]`` shaped like open_clip's tokenizer output, for the text-layout tests."""

import random

import torch

from openclip_ce.training.packing import PLACEHOLDER_TOKEN

SOT, EOT = 49406, 49407


def text_batch(b=12, k=4, seed=0, p_valid=0.75):
    """Realistic caption lengths, one caption at the full context (truncated), ~25% placeholder negatives."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((b, 1 + k, 77), PLACEHOLDER_TOKEN, dtype=torch.long)

    def row(n):
        t = torch.zeros(77, dtype=torch.long)
        t[0], t[n - 1] = SOT, EOT
        t[1:n - 1] = torch.randint(1, SOT, (n - 2,), generator=g)
        return t

    for i in range(b):
        n = 77 if i == 5 else rng.choice([6, 9, 11, 12, 13, 14, 15, 17, 19, 24, 31, 45])
        tokens[i, 0] = row(n)
        for j in range(k):
            if rng.random() < p_valid:
                tokens[i, 1 + j] = row(max(4, min(77, n + rng.choice([-1, 0, 1]))))
    return tokens
