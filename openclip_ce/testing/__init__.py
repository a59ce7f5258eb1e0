"""Tiny, randomly initialised models built locally, for the test suite and the benchmark scripts.

Not part of the API that training or evaluation uses; nothing here downloads.
"""
