"""Benchmarks; run them as scripts, e.g. ``python -m benchmarks.bench``. pytest doesn't collect them."""
