"""ONNX export: one graph per model that agrees with the PyTorch model on real photos, and runs without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from search.bundle_format import BUNDLE_FILE
from search.errors import UserError
from search.results.bundles import save_onnx_bundle
from search.results.onnx_bundle import ONNX_FILE, ONNX_FORMAT, load_onnx_bundle
from search.results.predict import image_files, predict_files, tab_lines
from search.results.reading import artifact_store_for, best_trial
from search.study.runner import prepare, run
from search.study.trained import load_trial_model
from tests.helpers import ROOT
from tests.results_study import (
    FLOWERS,
    REAL_PHOTOS,
    assert_onnx_agrees,
    finished_study,
    flowers_features_spec,
    run_search,
)
from tests.results_study import FLOWERS_STUDY as STUDY


@pytest.fixture(scope="module")
def flowers_storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's features study on real photos (tests/test_real_photos.py checks its accuracy)."""
    spec = flowers_features_spec(tmp_path_factory)
    run(prepare(spec))  # a study already run this session runs nothing more
    return spec.storage


@pytest.fixture(scope="module")
def flowers_study(flowers_storage: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=flowers_storage)


@pytest.fixture(scope="module")
def exported(flowers_storage: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m search export --format onnx` of the study's best trial, as a user runs it (once: it takes seconds)."""
    out = tmp_path_factory.mktemp("onnx-export") / "model"
    result = run_search(
        out.parent, "export", "--study-name", STUDY, "--storage", flowers_storage, "--out", str(out), "--format", "onnx"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((out / BUNDLE_FILE).read_text())
    assert record["format"] == ONNX_FORMAT and record["model"] == ONNX_FILE
    return out


def test_a_features_model_on_real_photos_as_one_onnx_graph(flowers_study: optuna.Study, exported: Path) -> None:
    model = load_trial_model(flowers_study, best_trial(flowers_study), artifact_store_for(flowers_study, None))
    assert_onnx_agrees(model, exported)


def test_onnx_predictions_on_the_val_folder_match_the_studys_val_accuracy(
    flowers_study: optuna.Study, exported: Path
) -> None:
    """The done-when in small: export --format onnx, predict the val photos, same accuracy as in the study."""
    predictions = predict_files(load_onnx_bundle(exported), image_files([FLOWERS / "val"]))
    correct = [p.label == p.path.parent.name for p in predictions]
    assert len(correct) == 20
    assert np.mean(correct) == pytest.approx(best_trial(flowers_study).user_attrs["val_accuracy"])


@pytest.mark.parametrize("space", ["finetune", "scratch"])
def test_a_network_model_as_one_onnx_graph(
    space: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    study = finished_study(tmp_path_factory, space).load()
    model = load_trial_model(study, best_trial(study), artifact_store_for(study, None))
    save_onnx_bundle(model, tmp_path / space)
    assert_onnx_agrees(model, tmp_path / space)


def test_onnx_predictions_need_no_torch(exported: Path) -> None:
    """`python -m search.results.predict` on an ONNX bundle, in a Python where `import torch` fails."""
    expected = tab_lines(predict_files(load_onnx_bundle(exported), REAL_PHOTOS))
    no_torch = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None  # any import of torch now raises ImportError\n"
        "sys.argv = ['predict', '--model', *sys.argv[1:]]\n"
        "runpy.run_module('search.results.predict', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", no_torch, str(exported), *map(str, REAL_PHOTOS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_predict_reads_an_onnx_bundle_from_the_command_line(exported: Path, tmp_path: Path) -> None:
    result = run_search(tmp_path, "predict", "--model", str(exported), str(FLOWERS / "val"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 20 and all(line.count("\t") == 2 for line in lines)


def test_a_broken_onnx_bundle_is_a_one_line_error(exported: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / ONNX_FILE).write_bytes(b"not a graph")
    with pytest.raises(UserError, match="is not an ONNX bundle this version can read") as caught:
        load_onnx_bundle(broken)
    assert "\n" not in str(caught.value)
