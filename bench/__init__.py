"""Benchmarks: ``python -m bench.ledger`` (see docs/benchmarks.md)."""
