"""Downloads get a socket timeout for the block only; the process default comes back afterwards."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from search.data.downloads import DOWNLOAD_TIMEOUT_S, network_timeout


@pytest.fixture(autouse=True)
def _restore_default_timeout() -> Iterator[None]:
    before = socket.getdefaulttimeout()
    yield
    socket.setdefaulttimeout(before)


def test_sockets_opened_inside_get_the_timeout_and_the_default_comes_back() -> None:
    socket.setdefaulttimeout(None)
    with network_timeout(7.5):
        assert socket.getdefaulttimeout() == 7.5
        with socket.socket() as sock:
            assert sock.gettimeout() == 7.5
    assert socket.getdefaulttimeout() is None
    with socket.socket() as sock:
        assert sock.gettimeout() is None


def test_the_default_timeout_is_the_download_timeout() -> None:
    socket.setdefaulttimeout(None)
    with network_timeout():
        assert socket.getdefaulttimeout() == DOWNLOAD_TIMEOUT_S
    assert socket.getdefaulttimeout() is None


def test_a_previous_timeout_is_restored_even_when_the_block_raises() -> None:
    socket.setdefaulttimeout(3.0)
    with pytest.raises(OSError, match="offline"), network_timeout(0.5):
        assert socket.getdefaulttimeout() == 0.5
        raise OSError("offline")
    assert socket.getdefaulttimeout() == 3.0


def test_blocks_nest() -> None:
    socket.setdefaulttimeout(None)
    with network_timeout(10):
        with network_timeout(2):
            assert socket.getdefaulttimeout() == 2
        assert socket.getdefaulttimeout() == 10
    assert socket.getdefaulttimeout() is None
