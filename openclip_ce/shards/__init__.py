"""``openclip-ce make-shards``: hard negatives written next to every caption of WebDataset shards.

The run, in modules: :mod:`.config` (every setting, typed) -> :mod:`.plan` (inputs, output names,
resume state) -> an engine, :mod:`.local` (processes) or :mod:`.ray_engine` (a Ray cluster), each
running :mod:`.process` per shard (tar I/O in :mod:`.tario`, negatives from
:mod:`openclip_ce.generation`) -> :mod:`.stats` (``stats.json``). :mod:`.command` is the CLI.
"""
