"""Many workers on the real PostgreSQL (127.0.0.1:5432 unless TEST_POSTGRES_URL says otherwise).

Each test gets a database that does not exist yet (the code creates it on first use) and drops it
afterwards. Without a server these tests skip; with CI set they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from search.cli.run import main
from search.study.storage import open_storage
from tests._postgres import (
    admin_connection,
    database_exists,
    database_url,
    drop_database,
    fresh_name,
)
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

PASSWORD = "s3cret-pw"  # the server trusts local connections, so any password gets in; none may show


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database name nobody has created yet, with a password in the URL; dropped afterwards."""
    with admin_connection() as admin:
        name = fresh_name("ts_test")
        try:
            url = make_url(database_url(name))
            yield url.set(password=PASSWORD).render_as_string(hide_password=False)
        finally:
            drop_database(admin, name)


@pytest.fixture
def role_without_createdb() -> Iterator[str]:
    """A login role that may not create databases; dropped afterwards."""
    with admin_connection() as admin:
        role = fresh_name("ts_role")
        admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
        try:
            yield role
        finally:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_database_is_created_on_first_use(postgres_url: str) -> None:
    name = str(make_url(postgres_url).database)
    assert not database_exists(name)
    storage = open_storage(postgres_url.replace("postgresql://", "postgres://"))  # Heroku/Docker spelling too
    assert database_exists(name)
    pool = storage.engine.pool
    assert isinstance(pool, QueuePool) and pool.size() == 2, "a pool for one worker, not for a server"
    open_storage(postgres_url.replace("postgresql://", "postgresql+psycopg://"))  # and it opens again


def test_several_workers_share_a_study_and_a_killed_ones_trial_is_retried(tmp_path: Path, postgres_url: str) -> None:
    """Three workers as on three machines: no parent, the heartbeat alone notices the dead one."""
    flags = [*setup_workdir(tmp_path, hold=[0]), "--storage", postgres_url, "--trials", "4"]
    env = {"TRANSFER_SEARCH_HEARTBEAT": "1"}  # dead after 3 s without a heartbeat
    workers = [start(tmp_path, *flags, env={**env, "TRANSFER_SEARCH_WORKER": str(i)}) for i in range(3)]
    try:
        killed = wait_for_running(postgres_url, 0, workers)
        pid = kill_worker_of(killed)
        assert pid in {w.pid for w in workers}
    except BaseException:
        stop(*workers)
        raise
    outputs = {w.pid: finish(w) for w in workers}
    survivors = [w for w in workers if w.pid != pid]
    assert all(w.returncode == 0 for w in survivors), outputs
    study = load(postgres_url)
    assert study is not None
    assert_retried(study, killed)
    assert 4 <= len(finished(study)) <= 4 + 3 - 1, states(study)
    assert states(study)["RUNNING"] == 0 and states(study)["FAIL"] == 1, states(study)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers))), "trial numbers are unique and gapless"
    fresh = [t for t in study.trials if "failed_trial" not in t.system_attrs]
    assert len({t.params["lr"] for t in fresh}) == len(fresh), "each worker samples its own"
    assert PASSWORD not in str(study.user_attrs) and PASSWORD not in "".join(outputs.values())


def test_sigterm_fails_the_running_trial_and_the_same_command_resumes(tmp_path: Path, postgres_url: str) -> None:
    command = [*setup_workdir(tmp_path, hold=[0]), "--storage", postgres_url, "--trials", "2"]
    worker = start(tmp_path, *command)
    try:
        wait_for_running(postgres_url, 0, [worker])
    finally:
        worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    assert worker.returncode == 130, output
    assert "interrupted" in output and "Run the same command to resume" in output, output
    study = load(postgres_url)
    assert study is not None
    assert states(study) == {"FAIL": 1}, states(study)
    assert "interrupted" in study.trials[0].user_attrs["fail_reason"]

    (tmp_path / "hold").unlink()
    resumed = start(tmp_path, *command)
    output = finish(resumed)
    assert resumed.returncode == 0, output
    study = load(postgres_url)
    assert study is not None
    assert len(finished(study)) == 2 and states(study)["RUNNING"] == 0, states(study)
    assert study.user_attrs["spec"]["storage"] == postgres_url.replace(PASSWORD, "***")
    assert PASSWORD not in output


def command_lines_of_children(pid: int) -> list[str]:
    """What `ps` shows for each child of `pid` (Linux /proc), space-joined."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode() for child in children]


def test_workers_get_the_storage_password_through_their_environment_not_their_command_line(
    tmp_path: Path, postgres_url: str
) -> None:
    flags = [*setup_workdir(tmp_path, hold=[0]), "--storage", postgres_url, "--trials", "2"]
    parent = start(tmp_path, *flags, "--workers", "2")
    try:
        wait_for_running(postgres_url, 0, [parent])
        lines = command_lines_of_children(parent.pid)
        assert len(lines) == 2 and all("--workers 1" in line for line in lines), lines
        assert not [line for line in lines if PASSWORD in line or "--storage" in line], lines
    finally:
        (tmp_path / "hold").unlink()
    output = finish(parent)
    assert parent.returncode == 0, output
    study = load(postgres_url)
    assert study is not None and len(finished(study)) >= 2, "the workers reached the study through the environment"
    assert PASSWORD not in output


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("postgresql://bob:{pw}@127.0.0.1:1/db", "cannot open storage postgresql://bob:***@127.0.0.1:1/db: "),
        ("postgresql://bob:{pw}@192.0.2.1/db", "cannot open storage postgresql://bob:***@192.0.2.1/db: "),
        ("postgresql://bob:{pw}@no-such-host.invalid/db", "failed to resolve host 'no-such-host.invalid'"),
        ("postgresql://ts_nobody:{pw}@127.0.0.1/postgres", 'role "ts_nobody" does not exist'),
        ("postgresql://bob:{pw}@127.0.0.1:port/db", "--storage 'postgresql://bob:***@127.0.0.1:port/db' is not a"),
        ("postgresql://bob:{pw}@127.0.0.1", "names no database"),
        ("mysql://bob:{pw}@127.0.0.1/db", "use sqlite:///file.db or postgresql://user@host/db"),
    ],
)
def test_bad_storage_is_one_line_with_the_password_masked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    storage: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    admin_connection().close()  # these cases say nothing without a server to tell them apart from
    assert main(["--storage", storage.format(pw=PASSWORD), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert PASSWORD not in err and "Traceback" not in err


def test_a_missing_database_the_user_may_not_create_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    role_without_createdb: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    name = fresh_name("ts_missing")
    url = database_url(name, user=role_without_createdb, password=PASSWORD)
    assert main(["--storage", url, "--trials", "1", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"database '{name}'" in err and f"{role_without_createdb} may not create it" in err, err
    assert f"createdb {name}" in err and PASSWORD not in err
    assert not database_exists(name)


def test_without_a_server_ci_fails_instead_of_skipping(tmp_path: Path) -> None:
    code = "from tests._postgres import admin_connection; admin_connection()"
    env = {**os.environ, "TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/postgres", "CI": "1"}
    script = tmp_path / "test_probe.py"
    script.write_text(f"def test_probe():\n    {code}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "CI is set: these tests must run" in done.stdout, done.stdout
