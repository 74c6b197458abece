"""Helpers for tests that run real worker processes on one study (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from tests.conftest import write_image_folder
from tests.helpers import FAST, ROOT

WORKER_FLAGS = [*FAST, "--pruner", "none"]  # every trial of a worker test runs to its end
STUDY = "many"
# A user's own space (a real feature): a linear probe whose trials listed in the file `hold` wait
# until the file is gone, so a test can stop or kill a worker while it is inside a trial.
HOLDING_SPACE = '''"""A linear probe; trials whose number is listed in ./hold wait while that file exists."""
import time
from pathlib import Path

from search.training.configs import FinetuneConfig

def held():
    try:
        return {int(n) for n in Path("hold").read_text().split()}
    except FileNotFoundError:
        return set()


def suggest(trial, ctx):
    lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    while trial.number in held():
        time.sleep(0.2)
    return FinetuneConfig(
        cut=ctx.cut_points[-1], head_width=32, head_depth=1, head_batchnorm=False, head_dropout=0.0,
        weight_decay=0.0, optimizer="adam", lr=lr, momentum=0.0, batch_size=64, unfreeze_blocks=0,
        backbone_lr_factor=1.0, head_only_epochs=0, augment="none",
    )
'''


def setup_workdir(cwd: Path, *, hold: Sequence[int] = ()) -> list[str]:
    """A tiny image folder and the holding space in `cwd`; the flags every worker gets."""
    write_image_folder(cwd / "shapes", per_class=10)
    (cwd / "probe.py").write_text(HOLDING_SPACE)
    if hold:
        (cwd / "hold").write_text(" ".join(map(str, hold)))
    return ["--space", "probe.py", "--data", "shapes", "--study-name", STUDY, *WORKER_FLAGS]


def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`run_study.py` as a user starts it, its output captured."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_study.py"), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> str:
    """Wait for a process we started and return its output; stop it by pid if it hangs."""
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        stop(process)
    return output


def stop(*processes: subprocess.Popen[str]) -> None:
    """SIGTERM (a parent passes it on to its workers, a worker fails its trial), then SIGKILL if need be."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(storage: str) -> optuna.Study | None:
    """The study, or None while the workers have not created it (or its database) yet."""
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return None  # opening it here would race the workers creating its tables
    try:  # never creates tables: that would race the workers doing so
        rdb = optuna.storages.RDBStorage(storage, skip_table_creation=True, skip_compatibility_check=True)
        return optuna.load_study(study_name=STUDY, storage=rdb)
    except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return None  # no such study, tables or database yet


def wait_for_running(storage: str, number: int, processes: Sequence[subprocess.Popen[str]]) -> FrozenTrial:
    """The trial `number` once a worker runs it and has said which worker it is."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), "a process ended before the trial started"
        study = load(storage)
        trials = [] if study is None else study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in trials:
            if trial.number == number and "worker" in trial.user_attrs and trial.params:
                return trial  # inside the objective, past its suggestions
        time.sleep(0.5)
    raise AssertionError(f"trial {number} never ran")


def kill_worker_of(trial: FrozenTrial) -> int:
    """SIGKILL the worker process named by the trial's `worker` attribute (host:pid); its pid."""
    pid = int(str(trial.user_attrs["worker"]).rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    return pid


def states(study: optuna.Study) -> Counter[str]:
    return Counter(t.state.name for t in study.trials)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def assert_retried(study: optuna.Study, killed: FrozenTrial) -> FrozenTrial:
    """The killed trial failed, and a later trial ran its parameters to the end."""
    failed = study.trials[killed.number]
    assert failed.state == TrialState.FAIL
    retries = [t for t in finished(study) if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1, [(t.number, t.state.name, t.system_attrs) for t in study.trials]
    # the stored failed trial, not the snapshot taken while it ran: that may predate its suggestions
    assert failed.params and retries[0].params == failed.params
    return retries[0]
