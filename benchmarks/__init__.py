"""Benchmarks: ``python -m benchmarks [name ...]``. Each prints a ratio against a baseline run alongside."""
