"""Leave the process once its work is saved, without the interpreter's slow teardown of every module.

After importing torch, scikit-learn and matplotlib, CPython's own finalisation (freeing every module
and object, after the exit handlers) is most of the 2 seconds in which Ctrl-C must end a study
(bench/RESULTS.md, "Measurements behind the code"). Everything a command writes is written and committed before its `main` returns, so the
exit handlers (logging's flush, temporary folders' cleanup, multiprocessing's) are all that is left.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_promptly(code: int) -> NoReturn:
    """Run the exit handlers, flush the standard streams, and end the process with `code`."""
    atexit._run_exitfuncs()  # what sys.exit would run first; the slow part is what it runs after them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
