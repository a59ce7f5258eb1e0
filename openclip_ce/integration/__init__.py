"""The open_clip integration: the only code that touches open_clip internals.

* :mod:`.bootstrap`    the ``sys.meta_path`` hook the ``.pth`` file installs (imports nothing heavy)
* :mod:`.switch`       its environment switches (``OPENCLIP_CE_DISABLE``, ``OPENCLIP_CE_METRICS``); a leaf
* :mod:`.activate`     per run: the version table, plugin discovery, parser hook (or a refusal)
* :mod:`.versions`     the supported open_clip versions, each with its wiring: the one table
* :mod:`.discovery`    entry-point discovery checked against the plugin contract
* :mod:`.requires`     what a wiring relies on in open_clip, stated as data and checked
* :mod:`.hooks`        what every wiring does alike (parser, model adapter, metrics, state, CPU DDP)
* :mod:`.openclip33`   the wiring into open_clip_torch 3.3's training main
* :mod:`.openclip4`    the wiring into open_clip main / 4.x (its task machinery)
* :mod:`.text_packing` packed text encoding for open_clip's own text towers (exactness rules included)

Nothing here imports :mod:`openclip_ce.training`: a plugin is known through :mod:`openclip_ce.contract`
only. Keep this file free of imports: the bootstrap imports this package in every interpreter.
"""
