"""Benchmark harness for auditsvc: ``python -m bench`` (``make bench``).

Every figure is a ratio against a baseline measured in the same run, or a
median over several trials; see docs/PERFORMANCE.md for what each one means.
"""
