"""Downloads that fail fast: an offline machine answers at once, a slow network must not hang a study."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

DOWNLOAD_TIMEOUT_S = 20  # per socket operation, not for the whole download


@contextmanager
def network_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Give every socket opened inside the block a timeout (urllib, torch.hub and torchvision use none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
