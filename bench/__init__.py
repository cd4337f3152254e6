"""Benchmarks: ours vs a reference implementation on the same work, in one run, as a ratio."""
