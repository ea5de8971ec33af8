"""Benchmarks (not tests), each a module run from the repository's root: ``.venv/bin/python -m
bench.<name>``. Each writes its run into bench/RESULTS.md (``bench.results``)."""
