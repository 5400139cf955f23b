"""The kernel comparison behind `python -m pyquant bench` and benchmarks/ (pytest-benchmark).

cases.py defines what is measured (one registry, shared by both front ends), runner.py times
cases side by side (interleaved rounds, min of rounds), report.py prints / saves the results.
"""
from .cli import add_bench_parser  # noqa: F401
