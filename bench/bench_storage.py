"""Benchmark: what the study storage costs per trial, with 1 and 4 worker processes.

A no-op objective (three suggestions, two reported epochs, one user attribute, the writes a real
trial makes) runs through `study.optimize` on each storage: SQLite and PostgreSQL opened as the
runner opens them (heartbeat, busy timeout, pool), and Optuna's journal file for comparison (no
heartbeat, so a killed worker's trial would stay RUNNING). The sampler is random, so the figures
are storage, not TPE. Each worker is a separate process; the table shows the wall time of the
whole run divided by its trials (what the storage adds to each trial of a study) and the mean
time of one trial inside a worker.

    python bench/bench_storage.py [--trials 200] [--postgres postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
WORKER_COUNTS = (1, 4)


def noop(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 1e-5, 1e-1, log=True)
    width = trial.suggest_int("width", 32, 512, log=True)
    trial.suggest_categorical("opt", ["sgd", "adam"])
    for epoch in range(2):
        trial.report(x * width / (epoch + 1), epoch)
    trial.set_user_attr("seconds", 0.0)
    return x * width


def open_any(url: str) -> optuna.storages.BaseStorage:
    """The runner's storage for SQLite/PostgreSQL URLs; `journal:PATH` for Optuna's journal file."""
    if url.startswith("journal:"):
        backend = JournalFileBackend(url.removeprefix("journal:"))
        return optuna.storages.JournalStorage(backend)
    from search.study.storage import open_storage

    return open_storage(url)


def worker(url: str, trials: int, seed: int) -> None:
    """One worker process: run `trials` no-op trials, print start, end and trial count."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_any(url)
    study = optuna.load_study(study_name="bench", storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed))
    started = time.time()
    study.optimize(noop, n_trials=trials)
    print(f"{started} {time.time()} {trials}")


def measure(url: str, trials: int, workers: int) -> tuple[float, float]:
    """(wall seconds per trial of the study, mean seconds per trial inside a worker)."""
    optuna.create_study(study_name="bench", storage=open_any(url))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    share = trials // workers
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, str(share), str(seed)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(workers)
    ]
    spans = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a worker on {url} failed (exit {process.returncode})")
        start, end, count = out.split()[-3:]
        spans.append((float(start), float(end), int(count)))
    total = sum(count for _, _, count in spans)
    wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    per_worker = sum((end - start) / count for start, end, count in spans) / len(spans)
    study = optuna.load_study(study_name="bench", storage=open_any(url))
    assert len(study.trials) == total, "every trial landed"
    return wall / total, per_worker


def postgres_database(admin_url: str) -> tuple[str, str] | None:
    """A fresh database's URL (the runner's storage creates it) and name, or None without a server."""
    import psycopg

    url = make_url(admin_url)
    try:
        psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database, connect_timeout=5
        ).close()
    except psycopg.OperationalError:
        return None
    name = f"bench_{uuid.uuid4().hex[:10]}"
    return url.set(database=name).render_as_string(hide_password=False), name


def drop_postgres(admin_url: str, name: str) -> None:
    import psycopg

    url = make_url(admin_url)
    with psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database, autocommit=True
    ) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200, help="trials per run, shared by its workers")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1/postgres", help="an admin URL")
    parser.add_argument("--worker", nargs=3, metavar=("URL", "TRIALS", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console()
    table = Table(title=f"storage cost per no-op trial ({args.trials} trials per run, {os.cpu_count()} CPU cores)")
    for column in ("storage", "workers", "ms per trial (study wall time / trials)", "ms per trial in a worker"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as folder:
        for workers in WORKER_COUNTS:
            for label, url in (
                ("SQLite (WAL, busy timeout, heartbeat)", f"sqlite:///{folder}/w{workers}.db"),
                ("journal file (no heartbeat)", f"journal:{folder}/w{workers}.log"),
            ):
                wall, inside = measure(url, args.trials, workers)
                table.add_row(label, str(workers), f"{wall * 1000:.1f}", f"{inside * 1000:.1f}")
            database = postgres_database(args.postgres)
            if database is None:
                table.add_row("PostgreSQL", str(workers), "no server", "-")
                continue
            url, name = database
            try:
                wall, inside = measure(url, args.trials, workers)
            finally:
                drop_postgres(args.postgres, name)
            table.add_row("PostgreSQL (pool, heartbeat)", str(workers), f"{wall * 1000:.1f}", f"{inside * 1000:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
