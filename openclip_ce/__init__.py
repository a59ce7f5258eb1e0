"""openclip-ce: CE-CLIP compositional hard-negative training as a plugin for OpenCLIP.

The package, one subpackage per responsibility (docs/developing.md, "Source layout"):

* :mod:`openclip_ce.training`     the loss (plain torch), data stage, model adapter, plugin object and contract
* :mod:`openclip_ce.integration`  the only code touching open_clip internals: bootstrap hook, discovery, wiring
* :mod:`openclip_ce.generation`   hard-negative generation: tagging, edits, fillers, generator
* :mod:`openclip_ce.shards`       ``openclip-ce make-shards``: the generator over WebDataset shards, at scale
* :mod:`openclip_ce.evaluate`     benchmarks (one module each), eval / compare / analyze
* :mod:`openclip_ce.demo`         ``openclip-ce demo``
* :mod:`openclip_ce.testing`      tiny local models for tests and benchmark scripts

Shared by all: :mod:`.negatives` (the ``neg.json`` format), :mod:`.errors` (the one user-error type),
:mod:`.fileio` (atomic writes), :mod:`.plotting`, :mod:`.logconfig`; entry points :mod:`.cli`
(``openclip-ce``) and :mod:`.train` (``python -m openclip_ce.train``).
"""

__version__ = "0.2.0"
