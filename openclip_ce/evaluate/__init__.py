"""Evaluation: compositional benchmarks, zero-shot retention, comparison and representation analysis.

* :mod:`.registry`     the benchmarks (one module each in :mod:`.benchmarks`), found automatically
* :mod:`.models`       model loading (pretrained tags, training checkpoints, QuickGELU) - public, shared
                       by ``eval``, ``analyze``, ``demo`` and :mod:`openclip_ce.wiseft`
* :mod:`.scorer`       batched image/text encoding and similarities
* :mod:`.common`       what the benchmark readers share (errors, image references, metrics)
* :mod:`.command`      ``openclip-ce eval``;  :mod:`.report` its results files and Markdown table
* :mod:`.compare`      ``openclip-ce compare``;  :mod:`.analyze`  ``openclip-ce analyze`` (paper Fig. 8)

WiSE-FT (``interpolate``, ``sweep``) builds on this package from its own, :mod:`openclip_ce.wiseft`.
"""
