"""The README and docs/ name only commands and flags the code has: each documented command's --help is run.

A flag renamed in the code and left in the docs (or a command dropped) fails here, not in a user's terminal.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache

import pytest

from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python (run_study\.py|-m search\.results\.predict|-m search [a-z]+)((?: [^`|#\n]*)?)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def documented() -> dict[str, set[str]]:
    """Each documented command (`run_study.py`, `-m search report`, ...) and the flags the docs give it."""
    commands: dict[str, set[str]] = {}
    for path in DOCS:
        for match in COMMAND.finditer(path.read_text()):
            commands.setdefault(match.group(1), set()).update(FLAG.findall(match.group(2)))
    return commands


@cache
def help_text(command: str) -> str:
    args = [str(ROOT / "run_study.py")] if command == "run_study.py" else command.split()[1:]
    done = subprocess.run(
        [sys.executable, *(["-m"] if command != "run_study.py" else []), *args, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command} --help failed: {done.stderr[-500:]}"
    return done.stdout


def test_the_docs_name_the_commands_users_run() -> None:
    commands = documented()
    assert {"run_study.py", "-m search report", "-m search export", "-m search predict"} <= set(commands)


@pytest.mark.parametrize("command", sorted(documented()))
def test_every_documented_flag_is_in_its_commands_help(command: str) -> None:
    shown = set(FLAG.findall(help_text(command)))
    missing = sorted(documented()[command] - shown - {"--help"})
    assert not missing, f"the docs give `python {command}` flags its --help does not know: {missing}"


def test_every_flag_the_docs_mention_belongs_to_a_command() -> None:
    """Flags named in prose too (`--max-epochs`, `--pretrained`): each must be some documented command's."""
    known = {flag for command in documented() for flag in FLAG.findall(help_text(command))}
    known.add("--layer-decay")  # timm's train.py flag, named as the origin of layer_decay
    for path in DOCS:
        unknown = sorted(set(FLAG.findall(path.read_text())) - known)
        assert not unknown, f"{path.name} names flags no command has: {unknown}"
