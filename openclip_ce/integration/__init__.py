"""The open_clip integration: the only code that touches open_clip internals.

* :mod:`.bootstrap`   the ``sys.meta_path`` hook the ``.pth`` file installs (imports nothing heavy)
* :mod:`.activate`    per run: version check, plugin discovery, parser hook (or a refusal)
* :mod:`.discovery`   open_clip version, entry-point discovery checked against the plugin contract
* :mod:`.openclip33`  the wiring into open_clip_torch 3.3's training main
* :mod:`.text_packing` packed text encoding for open_clip's own text towers (exactness rules included)

Keep this file free of imports: the bootstrap imports this package in every interpreter.
"""
