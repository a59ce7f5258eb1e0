"""An obviously-correct, loop-based reference of the CE-CLIP loss (DEVELOPERS.md semantics).

Written for clarity, not speed: one Python loop per sample, no masking tricks.
"""

import math

import torch


def reference_ce_clip(img, txt, scale, neg, mask, thresholds, alpha=0.2, beta=0.4,
                      itc_negatives="global", use_itc_negatives=True, use_imc=True, use_cmr=True):
    """Return (itc, imc, cmr, gaps) with gaps[k] = list of S(I,T)-S(I,T_k) over valid pairs."""
    n, k = mask.shape

    def s(a, b):
        return scale * torch.dot(a, b)

    all_valid_negs = [neg[j, t] for j in range(n) for t in range(k) if mask[j, t]]
    i2t_terms, t2i_terms = [], []
    for i in range(n):
        pos = s(img[i], txt[i])
        # image -> text: the batch's texts, plus hard negatives
        denom = [s(img[i], txt[j]) for j in range(n)]
        if use_itc_negatives:
            if itc_negatives == "global":
                denom += [s(img[i], t_k) for t_k in all_valid_negs]
            else:
                denom += [s(img[i], neg[i, t]) for t in range(k) if mask[i, t]]
        i2t_terms.append(-(pos - torch.logsumexp(torch.stack(denom), 0)))
        # text -> image: plain CLIP
        denom = [s(img[j], txt[i]) for j in range(n)]
        t2i_terms.append(-(pos - torch.logsumexp(torch.stack(denom), 0)))
    itc = (torch.stack(i2t_terms).mean() + torch.stack(t2i_terms).mean()) / 2

    return (itc, *reference_imc_cmr(s, img, txt, neg, mask, thresholds))


def reference_next_thresholds(gaps, previous, u=10.0):
    out = []
    for t, g in enumerate(gaps):
        out.append(previous[t] if not g else min(max(sum(g) / len(g), 0.0), u))
    return out


def random_batch(n=6, k=4, d=8, seed=0, p_valid=0.6, scale=math.exp(2.0)):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    neg = torch.nn.functional.normalize(torch.randn(n, k, d, generator=g), dim=-1)
    mask = torch.rand(n, k, generator=g) < p_valid
    return img, txt, torch.tensor(scale), neg, mask


def reference_imc_cmr(s, img, txt, neg, mask, thresholds):
    """IMC and CMR of the scores ``s(a, b)`` (CE-CLIP's and CE-SigLIP's alike): (imc, cmr, gaps)."""
    n, k = mask.shape
    imc_terms, cmr_terms = [], []
    gaps = [[] for _ in range(k)]
    for i in range(n):
        pos = s(img[i], txt[i])
        valid = [t for t in range(k) if mask[i, t]]
        if valid:
            entries = [pos] + [s(txt[i], neg[i, t]) for t in valid]
            imc_terms.append(-(pos - torch.logsumexp(torch.stack(entries), 0)))
        for t in valid:
            s_neg = s(img[i], neg[i, t])
            cmr_terms.append(torch.clamp(s_neg - pos + thresholds[t], min=0))
            gaps[t].append(float((pos - s_neg).detach()))
    imc = torch.stack(imc_terms).mean() if imc_terms else torch.tensor(0.0)
    cmr = torch.stack(cmr_terms).mean() if cmr_terms else torch.tensor(0.0)
    return imc, cmr, gaps
