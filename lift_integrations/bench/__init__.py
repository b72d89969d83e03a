"""Benchmarks: real reading-comprehension data and the scoring used to judge absorption against it."""
