"""Run or resume an Optuna study of transfer-learning configurations: see `--help`."""

import sys

from search.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
