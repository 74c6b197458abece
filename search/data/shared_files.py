"""Array files that processes on one machine share: filled by one under a lock, vouched for by a record.

The on-disk caches (decoded images, pooled features) keep one folder per key. A file is written
under a temporary name, renamed into place, and its record (the key and the file's checksum) is
written the same way beside it, so a reader never sees half a file and a truncated, foreign or
stale file is rebuilt, never silently used.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from search.errors import UserError

log = logging.getLogger(__name__)


@contextmanager
def locked(folder: Path, what: str) -> Iterator[None]:
    """The folder, created, under an exclusive lock between processes: one fills it, the others wait, then read."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the {what} {folder}: {exc.strerror}; pass --cache-dir") from None
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def temporary(folder: Path, name: str) -> Path:
    """A name nobody else writes to, in the same folder (so that renaming it into place is atomic)."""
    return folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{Path(name).suffix}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(written: Path, target: Path, key: dict[str, object]) -> None:
    """Rename into place, then record the key and checksum that vouch for it (written the same way)."""
    record = {"key": key, "sha256": sha256_of(written)}
    os.replace(written, target)
    record_file = target.with_suffix(".json")
    token = temporary(target.parent, record_file.name)
    token.write_text(json.dumps(record))
    os.replace(token, record_file)


def read_vouched(path: Path, key: dict[str, object], *, rows: int | None = None) -> np.ndarray | None:
    """The memory-mapped array when its record vouches for it (same key, same checksum) and it has `rows` rows.

    None, with a warning when a file was there, otherwise: the caller rebuilds it.
    """
    if not path.exists():
        return None
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        if record.get("key") != key or record.get("sha256") != sha256_of(path):
            raise ValueError("checksum or key does not match")
        array = np.load(path, mmap_mode="c")  # copy-on-write: torch takes it without a read-only warning
        if rows is not None and array.shape[0] != rows:
            raise ValueError(f"shape {array.shape}")
    except (OSError, ValueError) as exc:
        log.warning("rebuilding cache file %s: %s", path, exc)
        return None
    return array


def key_record(fields: dict[str, object]) -> dict[str, object]:
    """A key as it reads back from JSON (tuples as lists), so a stored key compares equal to its own."""
    return dict(json.loads(json.dumps(fields)))


def folder_name(prefix: str, key: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}"
