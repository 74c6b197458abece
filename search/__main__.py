"""`python -m search report | dashboard | export | predict`: see search.cli.results."""

import sys

from search.cli.results import main

if __name__ == "__main__":
    sys.exit(main())
