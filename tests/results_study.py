"""Small finished studies shared by the result tests (artifacts, report, export/predict, browser).

Each is built once per test session, under pytest's base temp folder, by the real CLI on real
SQLite: the tests that read results then cost seconds, not a study each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from search.cli.run import main
from search.data.dataset import SPLIT_CODES
from search.data.decode import decode_image_file
from search.data.sources import TEST, open_source
from search.kinds import TrainedModel
from search.results.onnx_bundle import load_onnx_bundle
from search.results.predict import image_files
from search.study.record import record_of
from search.study.spec import StudySpec
from tests.helpers import FAST, FEW_DIGITS, PHOTOS, ROOT

STUDY_FLAGS = [*FAST, *FEW_DIGITS, "--seed", "0"]


@dataclass(frozen=True)
class FinishedStudy:
    name: str
    folder: Path  # holds optuna.db and artifacts/

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.folder / 'optuna.db'}"

    @property
    def artifact_dir(self) -> Path:
        return self.folder / "artifacts"

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def args(self) -> list[str]:
        """The flags that point a result command at this study."""
        return ["--study-name", self.name, "--storage", self.storage]


def finished_study(factory: pytest.TempPathFactory, space: str, *extra: str, trials: int = 4) -> FinishedStudy:
    """A `space` study on four of the bundled digits, run once per session by `run_study.py`'s main."""
    folder = factory.getbasetemp() / f"results-{space}"
    study = FinishedStudy(name=f"results-{space}", folder=folder)
    if not (folder / "done").exists():
        folder.mkdir(exist_ok=True)
        args = ["--space", space, "--trials", str(trials), *STUDY_FLAGS, *extra, "--study-name", study.name]
        args += ["--storage", study.storage, "--artifact-dir", str(study.artifact_dir)]
        args += ["--cache-dir", str(folder / "feature_cache")]
        assert main(args) == 0
        (folder / "done").touch()
    return study


FLOWERS = Path(__file__).parent / "photos" / "flowers"  # 5 kinds x (6 train + 4 val) real photos, see photos/README.md
FLOWERS_STUDY = "features-flowers-efficientnet_lite0"  # the default name of a features study on FLOWERS


def flowers_features_spec(factory: pytest.TempPathFactory, *, trials: int = 8) -> StudySpec:
    """An 8-trial features study on real photos, in one place per session: whoever runs it first builds it."""
    folder = factory.getbasetemp() / "flowers-features"
    folder.mkdir(exist_ok=True)
    return StudySpec(
        space="features",
        trials=trials,
        data=str(FLOWERS),
        storage=f"sqlite:///{folder / 'studies.db'}",
        artifact_dir=folder / "artifacts",
        cache_dir=folder / "cache",
    )


def run_search(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m search ...` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "search", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def write_test_digits(study: optuna.Study, out: Path) -> Path:
    """The study's test-split digits as PNG files in class folders, as a user would have them on disk."""
    source = open_source("digits", root=Path("studies/datasets"), classes=record_of(study).made.classes)
    split = record_of(study).split
    assert split is not None, "the study recorded its split"
    for index, code in enumerate(split):
        if code == SPLIT_CODES[TEST]:
            folder = out / source.class_names[int(source.labels[index])]
            folder.mkdir(parents=True, exist_ok=True)
            with source.decode(index) as image:
                image.save(folder / f"digit_{index}.png")
    return out


def png_ok(path: Path) -> tuple[int, int]:
    """The size of a readable PNG; raises when the file is not one."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


REAL_PHOTOS = image_files([PHOTOS])  # flowers and daisies: 70 real photos
TOP1_AGREEMENT = 0.99  # what the ONNX issue asks of ONNX against PyTorch
PROBABILITY_TOLERANCE = 1e-3


def pixels(files: list[Path], size: int) -> np.ndarray:
    return np.stack([decode_image_file(path, size) for path in files])


def assert_onnx_agrees(model: TrainedModel, folder: Path) -> None:
    """The ONNX bundle in `folder` predicts what the PyTorch `model` predicts, on real photos."""
    onnx_model = load_onnx_bundle(folder)
    assert (onnx_model.class_names, onnx_model.image_size, onnx_model.kind) == (
        model.class_names,
        model.image_size,
        model.kind,
    )
    images = pixels(REAL_PHOTOS, model.image_size)
    expected = model.predict_proba(torch.from_numpy(images))
    got = onnx_model.predict_pixels(images)
    assert got.shape == expected.shape == (len(REAL_PHOTOS), len(model.class_names))
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    assert agreement >= TOP1_AGREEMENT, agreement
    assert float(np.abs(got - expected).max()) <= PROBABILITY_TOLERANCE
    one = onnx_model.predict_pixels(images[:1])  # the batch dimension is free: 1 and 70 both run
    np.testing.assert_allclose(one, got[:1], atol=1e-5)
