"""Benchmarks for lanchat (not part of the default test run; see docs/performance.md)."""
