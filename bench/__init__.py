"""Benchmarks for spiffe-broker (issue 3): ``python -m bench``; method and results in docs/benchmarks.md."""
