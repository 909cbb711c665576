"""Benchmarks; run them as scripts, e.g. ``python -m tests.benchmarks.bench``. pytest doesn't collect them."""
