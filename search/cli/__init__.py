"""Command lines: `run_study.py` (search.cli.run) and `python -m search` (search.cli.results), and what they print."""

from search.cli.results import main as results_main
from search.cli.run import main as run_main

__all__ = ["results_main", "run_main"]
