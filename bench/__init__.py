"""Benchmarks: run with `python -m bench.<name>`; they print figures and are not part of `make test`."""
