"""Classical fits in a forked child process, so that a stop (Ctrl-C, SIGTERM, a prune) ends them at once.

Native code (libsvm, a forest's trees, lbfgs) does not return to the interpreter until it is done, so
a signal sent during a fit waits for it: minutes on a big data set. Run in a child, the fit belongs to
the child; the parent only waits on a pipe, which a signal interrupts at once, and then kills the
child. The child is forked, so it starts with the features already in its memory: nothing is copied
or imported. Where fork is missing (Windows), the fit runs in this process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
import warnings
from collections.abc import Callable, Generator, Iterator
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from search.training.core import TrialFailed

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # Linux prctl: the child gets a signal when its parent dies


def in_child(stages: Callable[[], Iterator[T]]) -> Generator[T, None, None]:
    """Yield what `stages()` yields, computed in a forked child; closing this iterator kills the child.

    Close it (contextlib.closing) when stopping early: a prune then ends the fit instead of waiting for it.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        yield from stages()
        return
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    # Not a daemon: joblib runs a daemon's loops on one core (a forest's trees, SGD's classes). The child
    # cannot outlive the fit: it is killed below on every way out, and on Linux when this process dies.
    child = context.Process(target=_serve, args=(stages, send), daemon=False, name="classical-fit")
    with warnings.catch_warnings():  # only the child's own fit runs after the fork: no lock of ours is taken there
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    send.close()
    try:
        while True:
            try:
                what, value = receive.recv()  # a signal interrupts this wait: Ctrl-C is answered at once
            except EOFError:
                child.join()
                raise TrialFailed(f"the process fitting the classifier died (exit code {child.exitcode})") from None
            if what == "done":
                return
            if what == "error":
                raise value
            yield value
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()


def _serve(stages: Callable[[], Iterator[Any]], send: Connection) -> None:
    """The child: run the stages, send each result, then 'done' or the error; the parent handles signals."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":  # a parent killed with SIGKILL takes its fit with it
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        for item in stages():
            send.send(("item", item))
        send.send(("done", None))
    except Exception as exc:
        try:
            send.send(("error", exc))
        except Exception:  # an exception that does not pickle still says what it was
            send.send(("error", TrialFailed(f"{type(exc).__name__}: {exc}")))
    finally:
        send.close()
