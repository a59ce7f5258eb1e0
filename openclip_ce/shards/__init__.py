"""``openclip-ce make-shards``: hard negatives written next to every caption of WebDataset shards.

The run, in modules: :mod:`.config` (every setting, typed, frozen) -> :mod:`.plan` (inputs, output
names, resume state) -> :mod:`.outlock` (one run per ``--out``) -> :mod:`.setup` (what the run decides
from the settings: threads, tagging ops, filler, vocabulary; the one builder of a worker's generator)
-> an engine, :mod:`.local` (processes, a device each from :mod:`.devices`) or :mod:`.ray_engine` (a
Ray cluster; its demand in :mod:`.ray_resources`, its masked-LM actors and least-busy router in
:mod:`.ray_pool`), each running
:mod:`.process` per shard (tar I/O in :mod:`.tario`, negatives from :mod:`openclip_ce.generation`)
-> :mod:`.stats` (``stats.json``). :mod:`.command` is the CLI.
"""
