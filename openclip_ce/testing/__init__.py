"""What the test suite and the benchmark scripts share: tiny, randomly initialised models built locally, the
fixture writers (shards, csv files, benchmark layouts, token batches), loop-form reference losses, and the
helpers that run the project's commands in subprocesses as a user would.

Not part of the API that training or evaluation uses (nothing in the package imports it); nothing here
downloads. ``proc``, ``open_clip_main`` and ``make_shards_runs`` work from a source checkout.
"""
