"""Benchmarks: run by hand (python -m benchmarks.reward_throughput), not part of the tests."""
