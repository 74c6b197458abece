"""Progress bars for the long steps outside the trials: decoding, feature extraction, test evaluation.

They draw on rich's global console, the one the command line prints to, so that a bar started while
the study's own bar is live nests under it instead of tearing the screen. Where the output is not a
terminal (CI, a worker's pipe) nothing is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rich
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

MIN_STEPS = 2  # a single step has nothing to show


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient bar while the step runs; yields `advance(count)`."""
    console = rich.get_console()
    if not console.is_terminal or total < MIN_STEPS:
        yield lambda count: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda count: progress.advance(task, count)
