"""Evaluation: compositional benchmarks, zero-shot retention, comparison and representation analysis.

* :mod:`.registry`     the benchmarks (one module each in :mod:`.benchmarks`), found automatically
* :mod:`.models`       model loading (pretrained tags, training checkpoints, QuickGELU) - public, shared
                       by ``eval``, ``analyze``, ``demo`` and ``interpolate``
* :mod:`.scorer`       batched image/text encoding and similarities
* :mod:`.common`       what the benchmark readers share (errors, image references, metrics)
* :mod:`.command`      ``openclip-ce eval``;  :mod:`.report` its results files and Markdown table
* :mod:`.compare`      ``openclip-ce compare``;  :mod:`.analyze`  ``openclip-ce analyze`` (paper Fig. 8)
* :mod:`.interpolate`  ``openclip-ce interpolate`` (WiSE-FT weights);  :mod:`.sweep` ``openclip-ce sweep``, with
                       :mod:`.reuse` (inputs kept across alphas) and :mod:`.tradeoff` (the choice, table, chart)
"""
