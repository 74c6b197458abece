"""`--workers N`: each worker's environment (index, GPU or CPU share) and the line that says why one failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import search
from search.cli.launcher import Worker, available_cores, visible_gpus, without_storage, worker_environments
from search.study.workers import WORKER_ENV

PACKAGE_ROOT = str(Path(search.__file__).resolve().parents[1])


@pytest.fixture
def no_user_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.usefixtures("no_user_threads")
@pytest.mark.parametrize("count", [1, 2, 3])
def test_cpu_workers_get_their_index_and_a_share_of_the_cores(count: int) -> None:
    environments = worker_environments(count, "cpu")
    share = str(max(1, len(os.sched_getaffinity(0)) // count))
    assert [env[WORKER_ENV] for env, _ in environments] == [str(i) for i in range(count)]
    assert WORKER_ENV == "TRANSFER_SEARCH_WORKER"
    assert [env["OMP_NUM_THREADS"] for env, _ in environments] == [share] * count
    assert [where for _, where in environments] == [f"CPU threads: {share}"] * count
    for env, _ in environments:
        assert env["PYTHONPATH"].split(os.pathsep)[0] == PACKAGE_ROOT
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["PATH"] == os.environ["PATH"], "the rest of the environment is passed on"
    assert "OMP_NUM_THREADS" not in os.environ, "the parent's own environment is left alone"


def test_many_workers_on_few_cores_get_one_thread_each(no_user_threads: None) -> None:
    count = available_cores() + 1
    assert {env["OMP_NUM_THREADS"] for env, _ in worker_environments(count, "cpu")} == {"1"}


def test_a_users_thread_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    environments = worker_environments(4, "cpu")
    assert [env["OMP_NUM_THREADS"] for env, _ in environments] == ["3"] * 4
    assert [where for _, where in environments] == ["CPU threads: 3"] * 4


def test_a_users_pythonpath_is_kept_after_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/opt/extra")
    env, _ = worker_environments(1, "cpu")[0]
    assert env["PYTHONPATH"] == os.pathsep.join([PACKAGE_ROOT, "/opt/extra"])


@pytest.mark.usefixtures("no_user_threads")
@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_gpus_listed_in_cuda_visible_devices_are_dealt_round_robin(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,-1")  # a negative entry is not a GPU
    assert visible_gpus() == ["2", "5"]
    environments = worker_environments(3, device)
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in environments] == ["2", "5", "2"]
    assert [where for _, where in environments] == ["GPU 2", "GPU 5", "GPU 2"]
    assert [env[WORKER_ENV] for env, _ in environments] == ["0", "1", "2"]
    assert all("OMP_NUM_THREADS" not in env for env, _ in environments), "a GPU worker keeps torch's own threads"


@pytest.mark.usefixtures("no_user_threads")
def test_cpu_device_ignores_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    environments = worker_environments(2, "cpu")
    assert all(env["CUDA_VISIBLE_DEVICES"] == "0,1" for env, _ in environments), "inherited, not dealt"
    assert all(where.startswith("CPU threads: ") for _, where in environments)


@pytest.mark.usefixtures("no_user_threads")
def test_no_visible_gpu_means_cpu_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    environments = worker_environments(2, "auto")
    assert all(where.startswith("CPU threads: ") and "OMP_NUM_THREADS" in env for env, where in environments)


def finished_worker(stderr: str, code: int) -> Worker:
    """A worker whose real child process wrote `stderr` and exited with `code`."""
    script = f"import sys; sys.stderr.write({stderr!r}); sys.exit({code})"
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=30)
    worker = Worker(1, process)
    worker.tail.extend(line.rstrip() for line in err.splitlines())
    return worker


def test_error_line_prefers_the_last_line_starting_with_error() -> None:
    stderr = "loading\nerror: first problem\nTraceback (most recent call last):\nerror: data folder is empty\nbye\n\n"
    worker = finished_worker(stderr, 2)
    assert worker.process.returncode == 2
    assert worker.error_line() == "error: data folder is empty"


def test_error_line_falls_back_to_the_last_non_blank_line() -> None:
    worker = finished_worker("Traceback (most recent call last):\nRuntimeError: CUDA error  \n\n", 1)
    assert worker.error_line() == "RuntimeError: CUDA error"


def test_error_line_of_a_silent_worker_names_it_and_its_exit_code() -> None:
    worker = finished_worker("", 3)
    assert worker.error_line() == "worker 1 exited with code 3"


def test_the_storage_url_is_taken_off_worker_command_lines() -> None:
    url = "postgresql://bob:pw@db/study"
    assert without_storage(["--trials", "4", "--storage", url, "--seed", "1"]) == ["--trials", "4", "--seed", "1"]
    assert without_storage([f"--storage={url}", "--trials", "4"]) == ["--trials", "4"]
    assert without_storage(["--study-name", "storage"]) == ["--study-name", "storage"]


def test_run_study_reads_the_storage_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from search.cli.run import build_parser, spec_from_args

    monkeypatch.setenv("TRANSFER_SEARCH_STORAGE", "sqlite:///elsewhere.db")
    assert spec_from_args(build_parser().parse_args([])).storage == "sqlite:///elsewhere.db"
    assert spec_from_args(build_parser().parse_args(["--storage", "sqlite:///x.db"])).storage == "sqlite:///x.db"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--stor", "sqlite:///x.db"])  # no abbreviation can slip past without_storage
