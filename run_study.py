"""Run or resume an Optuna study of transfer-learning configurations: see `--help`."""

from search.cli.exit import exit_promptly
from search.cli.run import main

if __name__ == "__main__":
    exit_promptly(main())
