"""`python -m search dashboard`: optuna-dashboard on the study storage with the artifact store.

Bound to 127.0.0.1 only: the dashboard can edit studies (notes, artifacts), so it is not offered
to the network; reach a remote one through an SSH tunnel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from search.errors import UserError
from search.results.reading import open_existing_storage

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # optuna-dashboard's own default


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C must not wait for a browser's open connections


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log: the terminal shows the URL, not a line per request."""


def dashboard_url(port: int) -> str:
    return f"http://{HOST}:{port}/dashboard/"


def serve(storage_url: str, artifact_dir: Path, port: int, *, ready: Callable[[str], None]) -> None:
    """Serve until interrupted; `ready` is told the URL once the port is bound."""
    storage = open_existing_storage(storage_url)
    store = None
    if artifact_dir.is_dir():
        store = FileSystemArtifactStore(str(artifact_dir))
    else:
        log.warning("no artifact folder %s: trials will show no artifacts (pass --artifact-dir)", artifact_dir)
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        server = make_server(HOST, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise UserError(f"cannot listen on {HOST}:{port} ({exc.strerror}); pass another --port") from None
    with server:
        ready(dashboard_url(port))
        server.serve_forever()
