"""The open_clip integration: the only code that touches open_clip internals.

* :mod:`.bootstrap`    the ``sys.meta_path`` hook the ``.pth`` file installs (imports nothing heavy)
* :mod:`.switch`       its environment switches (``OPENCLIP_CE_DISABLE``, ``OPENCLIP_CE_METRICS``); a leaf
* :mod:`.activate`     per run: the version table, plugin discovery, parser hook (or a refusal)
* :mod:`.versions`     the supported open_clip versions, each with its wiring: the one table
* :mod:`.discovery`    entry-point discovery checked against the plugin contract
* :mod:`.requires`     what a wiring relies on in open_clip, stated as data and checked
* :mod:`.installer`    the one installer: what every wiring does alike, driven by a version's ``Wiring``
* :mod:`.parser_hook`  stage 1: ``--loss`` and the plugin's flags in open_clip's parser; which plugin a run selected
* :mod:`.epoch`        one plugin epoch: state for ``--resume``, metrics on, a plugin's stop, state written
* :mod:`.reporting`    the plugin's metrics in the log line, TensorBoard and W&B; a stock run's loss record
* :mod:`.cpu_ddp`      the CPU DDP fix (open_clip hands DDP ``device_ids=[cpu]``)
* :mod:`.patching`     the two ways of patching: an attribute swapped for a while, main's names replaced
* :mod:`.openclip33`   what differs in open_clip_torch 3.3's training main (its ``WIRING``)
* :mod:`.openclip4`    what differs in open_clip main / 4.x (its task machinery; its ``WIRING``)
* :mod:`.text_packing` packed text encoding for open_clip's own text towers (exactness rules included)

Nothing here imports :mod:`openclip_ce.training`: a plugin is known through :mod:`openclip_ce.contract`
only. Keep this file free of imports: the bootstrap imports this package in every interpreter.
"""
