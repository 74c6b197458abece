"""No pickle where a model is loaded: pipelines through skops with a trusted-type list, weights as tensors only.

The attack these tests play: a bundle (or a trial's kept model) whose file is a pickle that runs a
shell command when loaded. Loading must refuse it in one line, and the command must never run.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from search.errors import UserError
from search.kinds.features.kind import PIPELINE_FILE
from search.kinds.features.pipeline_files import dump_pipeline, fitted_bytes, fitted_numbers, load_pipeline
from search.kinds.features.trainer import build_pipeline
from search.kinds.model_files import unzip_model
from search.kinds.weights_file import WEIGHTS_FILE
from search.results.bundles import load_bundle, save_bundle
from search.results.reading import artifact_store_for, best_trial
from search.study.trained import load_trial_model
from search.training.configs import FeaturesConfig
from tests.conftest import write_image_folder
from tests.results_study import finished_study, run_search

CLASSIFIERS = [
    {"classifier": "rf", "rf_balanced": True},
    {"classifier": "rf", "rf_max_features": "0.2"},
    {"classifier": "svm", "svm_kernel": "rbf", "svm_gamma": 0.01},
    {"classifier": "svm", "svm_kernel": "linear"},
    {"classifier": "logreg"},
]


class RunsACommand:
    """A pickle payload: unpickling it calls os.system, the classic malicious-pickle attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(marker: Path) -> bytes:
    payload = pickle.dumps(RunsACommand(marker))
    assert b"system" in payload
    return payload


@pytest.mark.parametrize("pca", [0, 5])
@pytest.mark.parametrize("params", CLASSIFIERS, ids=lambda p: "-".join(map(str, p.values())))
def test_every_pipeline_the_space_builds_round_trips_through_the_trusted_list(
    params: dict[str, object], pca: int
) -> None:
    rng = np.random.default_rng(0)
    inputs, labels = rng.normal(size=(60, 20)), np.arange(60) % 3
    config = FeaturesConfig(
        layers=("a", "b"),
        pooling=("avg", "both"),
        l2_normalize=(True, False),
        pca_dims=pca,
        **params,  # type: ignore[arg-type]
    )
    pipeline = build_pipeline(config, [10, 10], labels, seed=0, threads=1).fit(inputs, labels)
    loaded = load_pipeline(dump_pipeline(pipeline), what="test", remedy="export it again")
    np.testing.assert_array_equal(loaded.predict_proba(inputs), pipeline.predict_proba(inputs))


def test_a_forest_holds_the_numbers_of_all_its_trees() -> None:
    """Each tree's state is made afresh for the walk: a freed one's id must not hide the next tree."""
    rng = np.random.default_rng(0)
    features, labels = rng.random((300, 5)), rng.integers(0, 3, 300)
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(features, labels)
    trees = sum(fitted_numbers(tree) for tree in forest.estimators_)
    assert trees <= fitted_numbers(forest) <= trees + 10  # plus the forest's own few arrays (classes)
    assert sum(tree.tree_.node_count for tree in forest.estimators_) < trees
    assert fitted_bytes(forest) >= sum(tree.tree_.value.nbytes for tree in forest.estimators_)


def test_a_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(
        UserError, match="is a pickle, which can run code when loaded: refused; export it again"
    ) as caught:
        load_pipeline(malicious_pickle(marker), what="the file", remedy="export it again")
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_a_skops_file_holding_an_untrusted_type_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = Pipeline([("step", FunctionTransformer(os.system, kw_args={}))])  # a function skops does not trust
    with pytest.raises(UserError, match="holds types this version does not trust") as caught:
        load_pipeline(sio.dumps(hostile), what="the file", remedy="export it again")
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_garbage_is_a_one_line_refusal(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a skops file"):
        load_pipeline(b"PK\x03\x04 half a zip", what="the file", remedy="export it again")


def test_a_kept_model_holding_a_malicious_pickle_is_refused(features_bundle: Path, tmp_path: Path) -> None:
    """A trial's kept model is a bundle zipped: the same refusal, and nothing runs."""
    marker, archive = tmp_path / "ran", tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for file in features_bundle.iterdir():
            payload = malicious_pickle(marker) if file.name == WEIGHTS_FILE else file.read_bytes()
            packed.writestr(file.name, payload)
    with pytest.raises(UserError, match="refused") as caught:
        unzip_model(archive)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.fixture(scope="module")
def features_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = finished_study(tmp_path_factory, "features").load()
    model = load_trial_model(study, best_trial(study), artifact_store_for(study, None))
    out = tmp_path_factory.mktemp("bundle") / "model"
    save_bundle(model, out)
    assert (out / PIPELINE_FILE).read_bytes()[:2] == b"PK", "the pipeline is written as a skops archive"
    assert load_bundle(out).kind == "features"
    return out


@pytest.mark.parametrize("replaced", [PIPELINE_FILE, WEIGHTS_FILE])
def test_predict_refuses_a_bundle_carrying_a_malicious_pickle_and_runs_nothing(
    replaced: str, features_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "received"
    shutil.copytree(features_bundle, bundle)
    marker = tmp_path / "ran"
    (bundle / replaced).write_bytes(malicious_pickle(marker))
    images = write_image_folder(tmp_path / "images", per_class=1)

    result = run_search(tmp_path, "predict", "--model", str(bundle), str(images))

    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "refused" in message and str(bundle) in message, message
    assert not marker.exists(), "the pickle's command ran"
