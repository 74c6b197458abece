"""run_study.py end to end on real SQLite: what the database holds, resume, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import optuna
import pytest

from search.cli.run import main
from tests.conftest import write_image_folder
from tests.helpers import FAST, FEW_DIGITS, ROOT


def run_cli(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'studies' / 'optuna.db'}")


def stored_split(cwd: Path, study: optuna.Study) -> str:
    storage = optuna.storages.RDBStorage(f"sqlite:///{cwd / 'studies' / 'optuna.db'}")
    return str(storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name))["data_split"])


STUDY = "finetune-digits-0_1_2_3-efficientnet_lite0"  # the default name: space, data, classes, backbone


def test_study_runs_persists_and_resumes(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "--trials", "1", *FAST, *FEW_DIGITS)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "python -m search dashboard" in first.stdout
    assert f"best trials of {STUDY}" in first.stdout
    study = load(tmp_path, STUDY)
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 1
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE, "validation accuracy, by default"
    for trial in finished:
        assert trial.intermediate_values, "each trial reports validation accuracy per epoch"
        for key in ("val_loss", "val_accuracy", "epochs_run", "seconds", "trainable_params", "total_params", "config"):
            assert key in trial.user_attrs
        assert trial.user_attrs["trainable_params"] <= trial.user_attrs["total_params"]
    completed = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.value == max(t.intermediate_values.values()) for t in completed), "its most accurate epoch"
    attrs = study.user_attrs
    assert attrs["spec"]["image_size"] == 32 and attrs["spec"]["backbone"] == "efficientnet_lite0"
    assert attrs["data"]["images"] == 720  # digits 0-3: 178 + 182 + 177 + 183
    split_before = stored_split(tmp_path, study)
    assert len(split_before) == 720 and set(split_before) == {"t", "v", "s"}

    resumed = run_cli(tmp_path, "--trials", "2", *FAST, *FEW_DIGITS)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load(tmp_path, STUDY)
    assert sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials) == 2
    assert stored_split(tmp_path, study) == split_before
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 2, "a resume explores, not replays"

    again = run_cli(tmp_path, "--trials", "2", *FAST, *FEW_DIGITS)
    assert again.returncode == 0 and "already has 2 finished trials" in again.stdout
    assert_dashboard_shows(tmp_path, STUDY, trials=2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_dashboard_shows(cwd: Path, name: str, trials: int) -> None:
    """The printed dashboard command, run for real: the study and each trial's intermediate values."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), "sqlite:///studies/optuna.db"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        deadline = time.monotonic() + 60
        while True:
            try:
                summaries = json.load(urllib.request.urlopen(base, timeout=5))["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == name)
        detail = json.load(urllib.request.urlopen(f"{base}/{study_id}?after=0", timeout=30))
        finished = [t for t in detail["trials"] if t["state"] in ("Complete", "Pruned")]
        assert len(finished) == trials
        assert all(t["intermediate_values"] for t in finished)
        assert {"val_accuracy", "seconds"} <= {a["key"] for a in finished[0]["user_attrs"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_folder_data_runs(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=10, split_dirs=("train", "val"))
    done = run_cli(tmp_path, "--data", str(folder), "--trials", "2", *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    study = load(tmp_path, "finetune-shapes-efficientnet_lite0")
    assert study.user_attrs["data"]["classes"] == ["bar", "cross", "disc"]


def test_bad_input_is_one_line_and_exit_2_without_traceback(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--data", str(tmp_path / "nope"), "--trials", "1")
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: data '{tmp_path / 'nope'}' is not a folder that exists; pass --data digits, a torchvision name (cifar10, cifar100, mnist, fashion_mnist) or a folder with one sub-folder per class"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nope"], "unknown space 'nope'; choose one of: features, finetune"),
        (["--backbone", "vgg_19"], "unknown backbone 'vgg_19'; choose one of:"),
        (["--storage", "not a url"], "is not a database URL"),
        (
            ["--storage", "postgresql://bob:secret@127.0.0.1:1/db"],
            "cannot open storage postgresql://bob:***@127.0.0.1:1/db: (psycopg.OperationalError) connection failed",
        ),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--time-budget", "0"], "--time-budget must be a positive number of seconds"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--storage", "sqlite:///README/x.db"], "cannot create README for --storage sqlite:///README/x.db"),
    ],
)
def test_bad_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README").write_text("a file where a folder is expected")
    assert main(["--trials", "1", *args]) == 2
    out = capsys.readouterr().err
    assert message in out
    assert "secret" not in out


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"cats": 4, "dogs": 0}, "holds no images"),
        ({"cats": 4}, "holds only one class ('cats')"),
        ({"cats": 4, "dogs": 2}, "class 'dogs' has 2 training image(s)"),
    ],
)
def test_bad_data_exits_2_and_creates_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    layout: dict[str, int],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, count in layout.items():
        write_image_folder(tmp_path / "data", classes=(name,), per_class=count) if count else (
            tmp_path / "data" / name
        ).mkdir(parents=True)
    assert main(["--data", str(tmp_path / "data"), "--trials", "1", *FAST]) == 2
    assert message in capsys.readouterr().err
    if "training image" not in message:
        assert not (tmp_path / "studies").exists(), "a rejected input leaves nothing behind"


def test_a_users_own_space_file_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "linear_probe.py").write_text(
        '''"""Only a linear probe on the last stage: how good are the frozen features?"""
from search.training.configs import FinetuneConfig

def suggest(trial, ctx):
    return FinetuneConfig(
        cut=ctx.cut_points[-1], head_width=64, head_depth=1, head_batchnorm=False, head_dropout=0.0,
        weight_decay=0.0, optimizer="adam", lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True), momentum=0.0,
        batch_size=64, unfreeze_blocks=0, backbone_lr_factor=1.0, head_only_epochs=0, augment="none",
    )
'''
    )
    assert main(["--space", "linear_probe.py", "--trials", "2", *FAST]) == 0
    study = optuna.load_study(
        study_name="linear_probe-digits-efficientnet_lite0", storage="sqlite:///studies/optuna.db"
    )
    assert [set(t.params) for t in study.trials] == [{"lr"}, {"lr"}]
    assert study.user_attrs["spec"]["space"] == "linear_probe.py"


def test_trials_that_keep_failing_stop_the_study_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text(
        "from search.study.objective import TrialFailed\n"
        "def suggest(trial, ctx):\n"
        "    trial.suggest_int('width', 1, 4)\n"
        "    raise TrialFailed('the GPU has no memory left')\n"
    )
    assert main(["--space", "broken.py", "--trials", "3", *FAST]) == 1
    err = capsys.readouterr().err
    assert "5 trials failed in a row (last: the GPU has no memory left)" in err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="broken-digits-efficientnet_lite0", storage="sqlite:///studies/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 5


def test_study_name_reused_with_other_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    shapes = write_image_folder(tmp_path / "shapes", per_class=6)
    assert main(["--data", str(shapes), "--study-name", "mine", "--trials", "1", *FAST]) == 0
    (shapes / "disc" / "disc_0.png").unlink()
    assert main(["--data", str(shapes), "--study-name", "mine", "--trials", "2", *FAST]) == 2
    assert (
        "study 'mine' was created with other data (18 images in 3 classes -> 17 images in 3 classes)"
        in capsys.readouterr().err
    )
    assert main(["--study-name", "mine", "--trials", "2", *FAST]) == 2
    assert "use another --study-name" in capsys.readouterr().err
    assert main(["--data", str(shapes), "--study-name", "mine", "--trials", "2", "--image-size", "64"]) == 2
    assert "was run with image_size=32, not 64" in capsys.readouterr().err


def first_trial_running(db: Path) -> bool:
    """Read-only peek, so the test never races the worker creating the database's tables."""
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            rows = connection.execute("SELECT state FROM trials ORDER BY number LIMIT 1").fetchall()
    except sqlite3.Error:
        return False
    return rows == [("RUNNING",)]


def test_ctrl_c_marks_the_running_trial_failed_and_resume_works(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [
        sys.executable,
        str(ROOT / "run_study.py"),
        "--trials",
        "3",
        "--image-size",
        "32",
        "--max-epochs",
        "200",
        "--patience",
        "200",
        "--pruner",
        "none",
    ]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not first_trial_running(tmp_path / "studies" / "optuna.db"):
            time.sleep(1)
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    assert "interrupted" in output and "Run the same command to resume" in output
    study = load(tmp_path, "finetune-digits-efficientnet_lite0")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, (states, output)
    assert states.count("FAIL") == 1, (states, output)  # the standard recipe still waits its turn
    interrupted = next(t for t in study.trials if t.state.name == "FAIL")
    assert "interrupted" in interrupted.user_attrs["fail_reason"]
