"""`python -m search report | dashboard | export | ensemble | predict`: see search.cli.results."""

from search.cli.exit import exit_promptly
from search.cli.results import main

if __name__ == "__main__":
    exit_promptly(main())
