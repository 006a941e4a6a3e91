"""Benchmarks (numbers in BENCHMARKS.md) and the GPU check at a real model's shape (``bench.gpu``).

The top floor of the layout (tests/test_layout.py): nothing below imports it.
"""
