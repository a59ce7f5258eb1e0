"""WiSE-FT: trading zero-shot accuracy against composition by interpolating weights (no retraining).

* :mod:`.interpolate`  ``openclip-ce interpolate``: ``(1 - a) * base + a * fine-tuned`` as a checkpoint
* :mod:`.sweep`        ``openclip-ce sweep``: evaluate a series of alphas with ``eval``'s protocol
* :mod:`.reuse`        what a sweep keeps across alphas (decoded images, tokenized captions)
* :mod:`.tradeoff`     the zero-shot / compositional trade-off: the choice of alpha, its table and chart

It uses :mod:`openclip_ce.evaluate` (model loading, benchmarks, protocol) one way; nothing in
``evaluate`` imports this package.
"""
