"""A command's prompt exit still runs the exit handlers and flushes what it printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PROGRAM = """
import atexit, sys
from pathlib import Path
from search.cli.exit import exit_promptly
atexit.register(lambda: Path(sys.argv[1]).write_text("handled"))
print("printed, not yet flushed", end="")
exit_promptly(3)
"""


def test_the_exit_code_output_and_exit_handlers_survive(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    run = subprocess.run([sys.executable, "-c", PROGRAM, str(marker)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 3
    assert run.stdout == "printed, not yet flushed"
    assert marker.read_text() == "handled"
