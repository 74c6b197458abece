"""Benchmark: how long run_study.py takes to exit after Ctrl-C or SIGTERM in the middle of a trial.

For each kind (finetune, features) and signal, it starts a real study on fresh SQLite, waits until a
trial has been running for a random moment (an epoch, a native fit, cost timing), sends the signal
and times until the process has exited. It then reads the storage: no trial may be left RUNNING, and
the interrupted one must be FAIL with its reason. Decoded images and features are cached across
runs, so later runs reach their trials quickly. Prints every stop, then the slowest against the
target (2 s).

    python bench/bench_stops.py [--data digits|DIR] [--image-size N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("finetune", "features")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
TARGET_SECONDS = 2.0


@dataclass(frozen=True)
class Stop:
    kind: str
    signal: str
    into_trial: float  # seconds the trial had been running when the signal was sent
    seconds: float  # from the signal to the process's exit
    exit_code: int
    left_running: int
    reason: str


def running_trials(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with closing(sqlite3.connect(database, timeout=1)) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0])
    except sqlite3.Error:  # the schema is being created
        return 0


def stop_once(kind: str, signum: signal.Signals, args: argparse.Namespace, folder: Path, run: int) -> Stop:
    database = folder / f"{kind}-{run}.db"
    command = [
        sys.executable,
        str(ROOT / "run_study.py"),
        f"--space={kind}",
        f"--data={args.data}",
        "--trials=1000",
        f"--storage=sqlite:///{database}",
        f"--artifact-dir={folder / 'artifacts'}",
        f"--cache-dir={folder / 'cache'}",
        f"--seed={run}",
        *([f"--image-size={args.image_size}"] if args.image_size else []),
    ]
    with open(folder / f"{kind}-{run}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while running_trials(database) == 0:
                if process.poll() is not None:
                    raise SystemExit(f"{kind} study exited ({process.returncode}) before a trial ran: see its log")
                time.sleep(0.05)
            started = time.perf_counter()
            time.sleep(random.uniform(0.5, args.wait))
            while running_trials(database) == 0:  # the trial ended in the wait: catch the next one
                time.sleep(0.05)
            into_trial = time.perf_counter() - started
            sent = time.perf_counter()
            process.send_signal(signum)
            exit_code = process.wait(timeout=120)
            seconds = time.perf_counter() - sent
        finally:
            if process.poll() is None:
                process.kill()
    study = optuna.load_study(
        study_name=f"{kind}-{Path(args.data).name}-efficientnet_lite0", storage=f"sqlite:///{database}"
    )
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    return Stop(
        kind=kind,
        signal=signum.name,
        into_trial=into_trial,
        seconds=seconds,
        exit_code=exit_code,
        left_running=sum(t.state.name == "RUNNING" for t in study.trials),
        reason=str(failed[-1].user_attrs.get("fail_reason", "")) if failed else "(no failed trial)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="digits, or a folder with one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=None, help="default: what the study would pick")
    parser.add_argument("--repeats", type=int, default=3, help="stops per kind and signal")
    parser.add_argument("--wait", type=float, default=6.0, help="the signal comes 0.5 s to this long into a trial")
    args = parser.parse_args()
    random.seed(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stops = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        run = 0
        for kind in KINDS:
            for signum in SIGNALS:
                for _ in range(args.repeats):
                    stop = stop_once(kind, signum, args, folder, run)
                    run += 1
                    stops.append(stop)
                    print(
                        f"  {stop.kind:<8} {stop.signal:<7} {stop.into_trial:4.1f} s into a trial: exit {stop.exit_code} "
                        f"after {stop.seconds:.2f} s, {stop.left_running} RUNNING left; {stop.reason}",
                        flush=True,
                    )
    slowest = max(stops, key=lambda s: s.seconds)
    print(
        f"slowest stop: {slowest.seconds:.2f} s ({slowest.kind}, {slowest.signal}; target at most {TARGET_SECONDS:.0f} s)"
    )
    print(f"trials left RUNNING: {sum(s.left_running for s in stops)} (target 0)")


if __name__ == "__main__":
    main()
