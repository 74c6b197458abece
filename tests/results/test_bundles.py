"""Exported model folders: a bundle predicts what its trial predicts, and anything else is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from search.bundle_format import BUNDLE_FILE
from search.data.decode import decode_image_file
from search.errors import UserError
from search.kinds.model_files import MODEL_FORMAT
from search.results.bundles import load_bundle, save_bundle
from search.results.reading import artifact_store_for, best_trial
from search.study.trained import load_trial_model
from tests.conftest import write_image_folder
from tests.helpers import FEW_DIGIT_CLASSES
from tests.results_study import finished_study

HINT = "write one with python -m search export"


def assert_one_line_bundle_error(path: Path, *parts: str) -> None:
    with pytest.raises(UserError) as caught:
        load_bundle(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path} is not a model bundle this version can read ("), message
    assert message.endswith(f"; {HINT}"), message
    for part in parts:
        assert part in message, (part, message)


def write_record(folder: Path, record: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUNDLE_FILE).write_text(json.dumps(record))
    return folder


def test_a_folder_without_bundle_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"not a bundle")
    assert_one_line_bundle_error(tmp_path, "FileNotFoundError", BUNDLE_FILE)
    assert_one_line_bundle_error(tmp_path / "missing", "FileNotFoundError")


def test_a_bundle_json_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / BUNDLE_FILE).write_text("{ half written\n and more lines")
    assert_one_line_bundle_error(tmp_path, "JSONDecodeError")


@pytest.mark.parametrize("record", [{"format": "transfer-search-model/0", "kind": "finetune"}, {"kind": "finetune"}])
def test_a_wrong_format_is_refused_naming_the_expected_one(tmp_path: Path, record: dict[str, object]) -> None:
    write_record(tmp_path, record)
    assert_one_line_bundle_error(tmp_path, f"format {record.get('format')!r}, expected {MODEL_FORMAT!r}")


def test_a_record_without_a_kind_is_refused(tmp_path: Path) -> None:
    write_record(tmp_path, {"format": MODEL_FORMAT})
    assert_one_line_bundle_error(tmp_path, "KeyError")


def test_an_unknown_kind_is_refused_with_the_export_hint(tmp_path: Path) -> None:
    write_record(tmp_path, {"format": MODEL_FORMAT, "kind": "mystery", "class_names": ["a", "b"], "image_size": 32})
    assert_one_line_bundle_error(tmp_path, "mystery")


def test_an_unknown_kind_is_at_least_a_one_line_user_error(tmp_path: Path) -> None:
    write_record(tmp_path, {"format": MODEL_FORMAT, "kind": "mystery"})
    with pytest.raises(UserError, match=r"unknown study kind 'mystery'; known kinds: .*finetune") as caught:
        load_bundle(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = write_image_folder(tmp_path_factory.mktemp("bundle-images"), per_class=3)
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("space", ["finetune", "features"])
def test_a_saved_bundle_predicts_what_the_trial_predicts(
    space: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, images: list[Path]
) -> None:
    study = finished_study(tmp_path_factory, space).load()
    trial = best_trial(study)
    model = load_trial_model(study, trial, artifact_store_for(study, None))
    out = tmp_path / "deep" / "bundle"
    save_bundle(model, out)

    record = json.loads((out / BUNDLE_FILE).read_text())
    assert record["format"] == MODEL_FORMAT and record["kind"] == space
    assert record["class_names"] == list(model.class_names) == list(FEW_DIGIT_CLASSES)
    assert record["image_size"] == model.image_size == 32
    assert len(list(out.iterdir())) > 1, "the kind's files sit beside bundle.json"

    loaded = load_bundle(out)
    assert (loaded.kind, loaded.class_names, loaded.image_size) == (model.kind, model.class_names, model.image_size)
    pixels = torch.from_numpy(np.stack([decode_image_file(p, model.image_size) for p in images]))
    expected = model.predict_proba(pixels)
    assert expected.shape == (len(images), len(FEW_DIGIT_CLASSES))
    np.testing.assert_allclose(loaded.predict_proba(pixels), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
