"""`python -m search dashboard`: its URL, binding to localhost, and a port in use or a missing database."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search.errors import UserError
from search.results.dashboard import HOST, dashboard_url, serve


class Served(Exception):
    """Raised from `ready` to leave serve() once it has told the URL (serve_forever never returns)."""


@pytest.fixture
def storage(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="on-show", storage=url)
    return url


@pytest.fixture(params=["bound", "listening"])
def taken(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A port another program holds: bound only, or serving already."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        if request.param == "listening":
            other.listen()
        yield other


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("port", [8080, 1, 65535])
def test_the_url_is_the_dashboard_page_on_localhost(port: int) -> None:
    assert HOST == "127.0.0.1"
    assert dashboard_url(port) == f"http://127.0.0.1:{port}/dashboard/"


def test_a_port_in_use_is_a_user_error_suggesting_another(storage: str, tmp_path: Path, taken: socket.socket) -> None:
    port = int(taken.getsockname()[1])
    told: list[str] = []
    with pytest.raises(UserError) as caught:
        serve(storage, tmp_path, port, ready=told.append)
    message = str(caught.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{port} (") and message.endswith("); pass another --port")
    assert "in use" in message.lower(), message  # the OS's reason, not a bare errno
    assert "\n" not in message
    assert told == [], "no URL for a server that never started"


def test_a_missing_database_is_refused_before_listening(tmp_path: Path) -> None:
    missing = tmp_path / "optuna.db"
    told: list[str] = []
    with pytest.raises(UserError, match=r"^no study database at"):
        serve(f"sqlite:///{missing}", tmp_path, free_port(), ready=told.append)
    assert told == [] and not missing.exists()


def test_ready_is_told_the_url_once_the_port_listens(
    storage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    told: list[str] = []

    def ready(url: str) -> None:
        told.append(url)
        with socket.create_connection((HOST, port), timeout=10):  # refused unless the server listens already
            pass
        raise Served

    with caplog.at_level(logging.WARNING, logger="search.results.dashboard"), pytest.raises(Served):
        serve(storage, tmp_path / "no-artifacts", port, ready=ready)
    assert told == [dashboard_url(port)]
    assert any("no artifact folder" in r.getMessage() for r in caplog.records), "a missing folder is only a warning"
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # leaving serve() closed its socket
