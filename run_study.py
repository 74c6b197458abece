"""Run or resume an Optuna study of transfer-learning configurations: see `--help`."""

import time

STARTED = time.monotonic()  # before the imports, which take seconds: --time-budget counts the whole command

from search.cli.exit import exit_promptly  # noqa: E402
from search.cli.run import main  # noqa: E402

if __name__ == "__main__":
    exit_promptly(main(started=STARTED))
