"""`--workers N` on the default SQLite storage: real worker processes sharing one study.

The whole study is counted (N to N + workers - 1 finished trials), a worker killed with SIGKILL
mid-trial loses nothing (its trial is failed and run again with the same parameters), and Ctrl-C
stops every worker without leaving a RUNNING trial. Resuming is the same code as with one worker
(tests/cli/test_cli.py); tests/study/test_postgres.py resumes after Ctrl-C on PostgreSQL.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import optuna
import pytest

from search.cli.run import main
from search.study.storage import heartbeat_interval, open_storage
from search.study.workers import SEED_STRIDE, Tally, rounds, worker_index, worker_seed
from tests._workers import (
    assert_retried,
    finish,
    finished,
    kill_worker_of,
    load,
    setup_workdir,
    start,
    states,
    stop,
    wait_for_running,
)


def sqlite_url(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'studies' / 'optuna.db'}"


def test_three_workers_share_one_study_and_a_killed_one_loses_nothing(tmp_path: Path) -> None:
    flags = setup_workdir(tmp_path, hold=[0])
    parent = start(tmp_path, *flags, "--trials", "4", "--workers", "3")
    try:
        killed = wait_for_running(sqlite_url(tmp_path), 0, [parent])
        pid = kill_worker_of(killed)
    except BaseException:
        stop(parent)
        raise
    output = finish(parent)
    assert parent.returncode == 0, output
    assert "3 workers on study many" in output and "best trials of many" in output, output
    assert f"(pid {pid}) was killed by SIGKILL; its trial #0 failed and queued again" in output, output
    study = load(sqlite_url(tmp_path))
    assert study is not None
    assert_retried(study, killed)
    assert "killed by SIGKILL" in study.trials[0].user_attrs["fail_reason"]
    by = study.user_attrs["test_evaluation"]["by"]
    assert by == f"{socket.gethostname()}:{parent.pid}", "the parent scored the test split, once; no worker did"
    assert 4 <= len(finished(study)) <= 4 + 3 - 1, states(study)
    assert states(study)["RUNNING"] == 0 and states(study)["FAIL"] == 1, states(study)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers))), "trial numbers are unique and gapless"
    assert len({t.user_attrs["worker"] for t in study.trials}) == 3, "every worker ran trials"
    fresh = [t for t in study.trials if "failed_trial" not in t.system_attrs]
    assert len({t.params["lr"] for t in fresh}) == len(fresh), "each worker samples its own"


def test_ctrl_c_stops_every_worker_and_leaves_no_running_trial(tmp_path: Path) -> None:
    flags = setup_workdir(tmp_path, hold=[0, 1])
    parent = start(tmp_path, *flags, "--trials", "3", "--workers", "2")
    try:
        for number in (0, 1):
            wait_for_running(sqlite_url(tmp_path), number, [parent])
    finally:
        parent.send_signal(signal.SIGINT)
    output = finish(parent)
    assert parent.returncode == 130, output
    assert "interrupted" in output and "Run the same command to resume" in output, output
    study = load(sqlite_url(tmp_path))
    assert study is not None
    assert states(study) == {"FAIL": 2}, states(study)
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in study.trials)


def test_bad_input_is_caught_before_any_worker_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--data", "nope", "--trials", "2", "--workers", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith("error: data 'nope' is not a folder that exists"), captured.err
    assert "worker 0" not in captured.out
    assert not (tmp_path / "studies").exists(), "a rejected input leaves nothing behind"


def test_worker_index_seeds_and_heartbeat_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRANSFER_SEARCH_WORKER", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "TRANSFER_SEARCH_HEARTBEAT"):
        monkeypatch.delenv(name, raising=False)
    assert worker_index() == 0 and worker_seed(7, 3) == 10
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    assert worker_index() == 4 and worker_seed(7, 3) == 10 + 4 * SEED_STRIDE
    monkeypatch.setenv("TRANSFER_SEARCH_WORKER", "1")
    assert worker_index() == 1
    assert heartbeat_interval() == 60
    monkeypatch.setenv("TRANSFER_SEARCH_HEARTBEAT", "5")
    assert heartbeat_interval() == 5
    monkeypatch.setenv("TRANSFER_SEARCH_HEARTBEAT", "soon")
    with pytest.raises(Exception, match="must be a whole number of seconds"):
        heartbeat_interval()


def test_running_trials_elsewhere_count_toward_the_target() -> None:
    study = optuna.create_study()
    running = study.ask()
    study.tell(study.ask(), 1.0)
    assert Tally.of(study) == Tally(finished=1, running=1, waiting=0)
    assert Tally.of(study).covers(2) and not Tally.of(study).covers(3)
    study.enqueue_trial({"x": 1.0})
    assert not Tally.of(study).covers(2), "a queued trial (a dead worker's retry) is always run"
    study.tell(running, state=optuna.trial.TrialState.FAIL)
    assert not Tally.of(study).covers(2)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_past_the_target_a_dead_peers_trial_is_still_failed_and_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers that raced past the target wait out the grace period instead of leaving it RUNNING."""
    monkeypatch.setenv("TRANSFER_SEARCH_HEARTBEAT", "1")
    storage = open_storage(sqlite_url(tmp_path))
    study = optuna.create_study(study_name="raced", storage=storage)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(dead._trial_id)  # its worker beat once, then died
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    assert next(rounds(study, 2, timeout=30)) is not None, "the retry is handed to this worker"
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE", "WAITING"]
    assert study.trials[3].params == dead.params


def test_sqlite_on_a_local_disk_uses_the_write_ahead_log(tmp_path: Path) -> None:
    """Readers (the parent, the dashboard) never wait for a writing worker, and a commit costs one fsync."""
    open_storage(f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}")
    with closing(sqlite3.connect(tmp_path / "studies" / "optuna.db")) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
