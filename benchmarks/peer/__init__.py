"""Peers the benchmarks compare the Python engine with (the TypeScript original)."""
