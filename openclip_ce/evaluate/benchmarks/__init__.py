"""One module per benchmark. Each defines ``BENCHMARK`` (an :class:`openclip_ce.evaluate.registry.Benchmark`);
the registry finds every module here, so a new benchmark is one new file."""
