"""Optuna RDB storage from a URL: SQLite under studies/ by default, PostgreSQL for many workers."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from search.errors import UserError
from search.spec import mask_password

HEARTBEAT_INTERVAL_S = 60  # a live worker touches its running trial this often
GRACE_PERIOD_S = 180  # a trial silent this long belongs to a dead worker and is retried
MAX_RETRY = 2  # a trial that kills its worker three times is not worth a fourth try
SQLITE_BUSY_TIMEOUT_S = 60  # several local processes may write one file; wait, do not fail
SCHEMA_RACE_RETRIES = 3


def storage_error_line(exc: BaseException) -> str:
    """A driver error's first line, password masked: enough to act on, never a page of SQL."""
    text = str(exc).strip()
    return mask_password(text.splitlines()[0] if text else type(exc).__name__)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating where needed) the study database, with heartbeats and stale-trial retry."""
    shown = mask_password(url)  # errors name the URL the user typed, never its password
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"--storage '{shown}' is not a database URL; e.g. sqlite:///studies/optuna.db or postgresql://user@host/db"
        ) from None
    engine_kwargs: dict[str, object] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create {folder} for --storage {shown}: {exc.strerror}; pick a writable path"
                ) from None
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("", "psycopg2"):
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        engine_kwargs |= {
            "pool_size": 2,
            "max_overflow": 2,
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 10},
        }
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            with warnings.catch_warnings():  # heartbeats and their retry are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY
                    ),
                )
        except OperationalError as exc:
            # Two processes creating a fresh database's tables at once: the loser finds them made.
            if "already exists" not in str(exc) or attempt == SCHEMA_RACE_RETRIES:
                raise UserError(f"cannot open storage {shown}: {storage_error_line(exc)}") from None
            time.sleep(0.5 * (attempt + 1))
        except (SQLAlchemyError, ImportError, ValueError, RuntimeError) as exc:  # RuntimeError: schema version
            raise UserError(f"cannot open storage {shown}: {storage_error_line(exc)}") from None
    raise AssertionError("unreachable")
