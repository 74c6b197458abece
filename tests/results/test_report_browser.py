"""The report's first screen in a real browser: headless Chromium at 1280x900 shows the answer without scrolling."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest

from search.cli.results import main
from search.study.record import TEST_ATTR
from tests.results.test_dashboard_browser import CHROMIUM, chromium
from tests.results_study import FinishedStudy, finished_study, png_ok

# A user's machine without it skips; CI installs it (.ci/run), so there a missing browser is a failure.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)"
)
SCREEN = (1280, 900)
# Appended to a copy of the report: where each block landed, written into the page for --dump-dom to show.
LAYOUT_SCRIPT = """<script>
const blocks = [...document.body.querySelectorAll("h1, h2, p, table")].map((el) => {
  const box = el.getBoundingClientRect();
  return {tag: el.tagName, bottom: box.bottom, text: el.innerText};
});
const out = document.createElement("pre");
out.id = "layout";
out.textContent = JSON.stringify(blocks);
document.body.appendChild(out);
</script>"""


@pytest.fixture(scope="module", params=["finetune", "features"])
def study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, request.param)


def first_screen(page: Path, profile: Path) -> str:
    """The text of every block whose bottom edge is inside the first 1280x900 screen."""
    measured = page.with_name("measured.html")
    measured.write_text(page.read_text().replace("</body>", LAYOUT_SCRIPT + "</body>"))
    dom = chromium("--dump-dom", measured.as_uri(), profile=profile, window=SCREEN).stdout
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not run its layout script: {dom[-500:]}"
    blocks = json.loads(html.unescape(found.group(1)))
    return "\n".join(block["text"] for block in blocks if block["bottom"] <= SCREEN[1])


def test_the_reports_first_screen_holds_the_answer(study: FinishedStudy, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["report", *study.args(), "--out", str(out)]) == 0
    loaded = study.load()
    best, test = loaded.best_trial, loaded.user_attrs[TEST_ATTR]
    shown = first_screen(out / "report.html", tmp_path / "profile")
    assert f"Best model: trial {best.number}, " in shown, shown
    assert f"{best.user_attrs['val_accuracy']:.2%}" in shown and f"{test['accuracy']:.2%}" in shown, shown
    assert "The study ran " in shown and " in " in shown.split("The study ran ")[1], "the study's wall time"
    assert "Against the standard first trials" in shown, shown

    screenshot = tmp_path / "report-first-screen.png"
    chromium(f"--screenshot={screenshot}", (out / "report.html").as_uri(), profile=tmp_path / "profile", window=SCREEN)
    assert png_ok(screenshot) == SCREEN
