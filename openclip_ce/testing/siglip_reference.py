"""An obviously-correct, loop-based reference of the CE-SigLIP loss (``--loss ce_clip --siglip``).

One Python loop per pair, SigLIP's scores ``S = logit_scale * cos + logit_bias`` used everywhere
(also in IMC and CMR, where the bias must cancel), no masking tricks.
"""

import torch
import torch.nn.functional as F

from .loss_reference import reference_imc_cmr


def reference_ce_siglip(img, txt, scale, bias, neg, mask, thresholds, alpha=0.2, beta=0.4,
                        itc_negatives="global", use_itc_negatives=True):
    """Return (itc, imc, cmr, gaps): the unweighted terms and gaps[k] = [S(I,T)-S(I,T_k) over valid pairs]."""
    n, k = mask.shape

    def s(a, b):
        return scale * torch.dot(a, b) + bias

    def nll(z, score):  # -log sigmoid(z * S)
        return -F.logsigmoid(z * score)

    valid_negs = [(j, t) for j in range(n) for t in range(k) if mask[j, t]]
    itc_terms = []
    for i in range(n):
        for j in range(n):
            itc_terms.append(nll(1.0 if i == j else -1.0, s(img[i], txt[j])))
        if use_itc_negatives:
            negs = valid_negs if itc_negatives == "global" else [(i, t) for t in range(k) if mask[i, t]]
            for j, t in negs:
                itc_terms.append(nll(-1.0, s(img[i], neg[j, t])))
    itc = torch.stack(itc_terms).sum() / n  # open_clip's SigLipLoss: sum over pairs / number of images

    return (itc, *reference_imc_cmr(s, img, txt, neg, mask, thresholds))
