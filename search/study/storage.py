"""Optuna RDB storage from a URL: SQLite under studies/ by default, PostgreSQL for many workers."""

from __future__ import annotations

import os
import re
import sqlite3
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from search.errors import UserError

# The storage URL when --storage is not given: how --workers hands a URL with a password to its workers
# (a command line is visible to every user in `ps`; an environment is not), and a way for users to do the same.
STORAGE_ENV = "TRANSFER_SEARCH_STORAGE"
HEARTBEAT_ENV = "TRANSFER_SEARCH_HEARTBEAT"  # seconds between heartbeats; tests and impatient users lower it
HEARTBEAT_INTERVAL_S = 60  # a live worker touches its running trial this often
GRACE_HEARTBEATS = 3  # a trial silent for 3 heartbeats (180 s by default) belongs to a dead worker and is retried
MAX_RETRY = 2  # a trial that kills its worker three times is not worth a fourth try
SQLITE_BUSY_TIMEOUT_S = 60  # several local processes may write one file; wait, do not fail
SCHEMA_RACE_RETRIES = 3
PG_CONNECT_TIMEOUT_S = 5  # an unreachable server is an error within seconds, not a hang
# Per process: the optimisation loop and the heartbeat thread each hold at most one connection, so
# 2 (+1 for an overlap) per worker; 30 workers stay under PostgreSQL's default max_connections=100.
PG_POOL = {"pool_size": 2, "max_overflow": 1, "pool_pre_ping": True, "pool_recycle": 1800}
PG_BUSY_RETRIES = 5  # a job array starting at once may find the server's connection slots full for a moment
PG_BUSY_MARKERS = ("too many clients", "remaining connection slots", "the database system is starting up")
LOCAL_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "apfs", "f2fs", "bcachefs")
MISSING_DB = re.compile(r'database "([^"]+)" does not exist')


def mask_password(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and study attributes."""
    # up to the last @: a password may hold @ or / (SQLAlchemy accepts both); masking too much is the safe side
    return re.sub(r"(://[^:/@]+:).*@", r"\1***@", url)


def storage_error_line(exc: BaseException) -> str:
    """A driver error's first line, password masked: enough to act on, never a page of SQL."""
    text = str(exc).strip()
    return mask_password(text.splitlines()[0] if text else type(exc).__name__)


def heartbeat_interval() -> int:
    """Seconds between heartbeats: TRANSFER_SEARCH_HEARTBEAT, else 60; a dead worker is noticed after 3 of them."""
    value = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not value:
        return HEARTBEAT_INTERVAL_S
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{HEARTBEAT_ENV}={value!r} must be a whole number of seconds (at least 1), e.g. 60")
    return int(value)


def parse_storage_url(url: str) -> URL:
    """The URL as SQLAlchemy reads it, `postgres://` and psycopg2 spellings mapped to psycopg 3."""
    shown = mask_password(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise UserError(
            f"--storage '{shown}' is not a database URL; e.g. sqlite:///studies/optuna.db or postgresql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        if backend == "postgres" or parsed.get_driver_name() in ("", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        if not parsed.database:
            raise UserError(f"--storage '{shown}' names no database; e.g. postgresql://user@host/optuna")
    elif backend != "sqlite":
        raise UserError(f"--storage '{shown}': use sqlite:///file.db or postgresql://user@host/db")
    return parsed


def _engine_kwargs(parsed: URL, shown: str) -> dict[str, Any]:
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create {folder} for --storage {shown}: {exc.strerror}; pick a writable path"
                ) from None
            _write_ahead_log(Path(parsed.database).expanduser())
        # Many local workers on one file: each write waits for the lock (Optuna's transactions take
        # milliseconds) instead of failing with "database is locked".
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {**PG_POOL, "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S}}


def _filesystem_type(path: Path) -> str | None:
    """The type of the file system holding `path`, from /proc/mounts (None where there is none)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    target = str(path.resolve())
    best = max((m for m in mounts if target == m[0] or target.startswith(m[0].rstrip("/") + "/")), default=None)
    return best[1] if best else None


def _write_ahead_log(database: Path) -> None:
    """SQLite's WAL journal on local disks: readers never wait for the writer and a commit costs one fsync.

    Measured with bench/bench_storage.py: a no-op trial costs about a third of the rollback journal's
    time. WAL needs shared memory between the processes, so network file systems keep the default.
    """
    if _filesystem_type(database.parent) not in LOCAL_FILESYSTEMS:
        return
    try:
        with closing(sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # persistent: every later connection uses it
    except sqlite3.Error:
        pass  # e.g. a read-only file: the default journal works too, only slower


def _create_database(parsed: URL, shown: str) -> None:
    """CREATE DATABASE through the server's maintenance database; one line when the user may not."""
    name = parsed.database
    engine = sqlalchemy.create_engine(
        parsed.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )
    try:
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                with engine.connect() as connection:
                    quoted = engine.dialect.identifier_preparer.quote(str(name))
                    connection.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
                return
            except OperationalError as exc:  # workers creating it at once: "template1 is being accessed"
                if "being accessed by other users" not in str(exc) or attempt == SCHEMA_RACE_RETRIES:
                    raise
                time.sleep(0.5 * 2**attempt)
    except (ProgrammingError, IntegrityError) as exc:
        if "already exists" in str(exc) or isinstance(exc, IntegrityError):  # another worker created it just now
            return
        user = parsed.username or "this user"
        raise UserError(
            f"database '{name}' in {shown} does not exist and {user} may not create it "
            f"({storage_error_line(exc)}); run `createdb {name}` or ask the server's admin"
        ) from None
    except SQLAlchemyError as exc:
        raise UserError(
            f"database '{name}' in {shown} does not exist and cannot be created: {storage_error_line(exc)}"
        ) from None
    finally:
        engine.dispose()


def _rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    interval = heartbeat_interval()
    with warnings.catch_warnings():  # heartbeats and their retry are "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=interval,
            grace_period=GRACE_HEARTBEATS * interval,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating where needed) the study database, with heartbeats and stale-trial retry."""
    shown = mask_password(url)  # errors name the URL the user typed, never its password
    parsed = parse_storage_url(url)
    engine_kwargs = _engine_kwargs(parsed, shown)
    rendered = parsed.render_as_string(hide_password=False)
    created = False
    for attempt in range(max(SCHEMA_RACE_RETRIES, PG_BUSY_RETRIES) + 1):
        try:
            return _rdb_storage(rendered, engine_kwargs)
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            text = str(exc)
            missing = MISSING_DB.search(text)
            if missing and not created and parsed.get_backend_name() == "postgresql":
                _create_database(parsed, shown)  # first use of a new database name: make it, then retry
                created = True
                continue
            # Several processes creating a fresh database's tables at once: the losers find them made.
            race = isinstance(exc, IntegrityError) or "already exists" in text or "duplicate key" in text
            busy = any(marker in text for marker in PG_BUSY_MARKERS)
            if (race and attempt < SCHEMA_RACE_RETRIES) or (busy and attempt < PG_BUSY_RETRIES):
                time.sleep(0.5 * 2**attempt)
                continue
            hint = "; lower the number of workers or raise the server's max_connections" if busy else ""
            raise UserError(f"cannot open storage {shown}: {storage_error_line(exc)}{hint}") from None
        except (SQLAlchemyError, ImportError, ValueError, RuntimeError) as exc:  # RuntimeError: schema version
            raise UserError(f"cannot open storage {shown}: {storage_error_line(exc)}") from None
    raise AssertionError("unreachable")
