"""A real browser on the real dashboard: headless Chromium opens a trial's page and sees its artifacts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from search.study.artifacts import CONFUSION_FILE, CURVES_FILE, PER_CLASS_FILE
from search.study.record import trial_artifacts
from tests.results_study import ROOT, FinishedStudy, finished_study, png_ok

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A user's machine without it skips; CI installs it (.ci/run), so there a missing browser is a failure.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "finetune")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_json(url: str, server: subprocess.Popen[str], *, deadline_s: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return dict(json.load(response))
        except OSError:
            if server.poll() is not None:
                raise AssertionError(f"the dashboard exited: {server.communicate()[0]}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def chromium(*args: str, profile: Path, window: tuple[int, int] = (1400, 1300)) -> subprocess.CompletedProcess[str]:
    """Headless Chromium; virtual time lets the single-page app fetch and render before the dump."""
    assert CHROMIUM is not None, "Debian's chromium is not installed (CI installs it in .ci/run)"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        "--virtual-time-budget=20000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_dashboard_shows_the_study_and_a_trials_artifacts(study: FinishedStudy, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "search", "dashboard", "--storage", study.storage, "--port", str(port)]
    command += ["--artifact-dir", str(study.artifact_dir)]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        summaries = wait_for_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        assert isinstance(summaries, list)
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == study.name)
        loaded = study.load()
        best = loaded.best_trial
        page = f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials?numbers={best.number}"

        dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout
        assert study.name in dom
        assert f"Trial {best.number}" in dom
        for name in (CURVES_FILE, CONFUSION_FILE, PER_CLASS_FILE):
            assert name in dom, f"{name} is not on the trial's page"
        # the image the page shows is served: the dashboard reads the artifact store it was given
        curves_id = trial_artifacts(loaded, best)[CURVES_FILE]
        assert curves_id in dom
        url = f"http://127.0.0.1:{port}/artifacts/{study_id}/{best._trial_id}/{curves_id}"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"

        screenshot = tmp_path / "dashboard-trial.png"
        chromium(f"--screenshot={screenshot}", page, profile=tmp_path / "profile")
        assert png_ok(screenshot) == (1400, 1300)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/dashboard/" in output
