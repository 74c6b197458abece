"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


def exception_line(exc: BaseException, *, limit: int = 200) -> str:
    """'Type: the first line of its message', cut to `limit` characters: a cause to quote inside a one-line error."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:limit]


class UserError(Exception):
    """Bad input the user can fix; the CLI prints the message and exits with code 2."""

    exit_code = 2


class StudyAborted(Exception):
    """The study stopped itself because its trials cannot succeed; the CLI prints why and exits 1."""

    exit_code = 1
