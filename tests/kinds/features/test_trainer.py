"""The features space, its trainer, and studies that tap ImageNet or a fine-tuned trial's network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search.data.dataset import Dataset, decode_source
from search.data.feature_cache import FeatureCache
from search.data.sources import VAL, open_source
from search.errors import UserError
from search.kinds.features.trainer import rf_stages, train_features
from search.study.runner import PreparedStudy, prepare, run
from search.study.spec import StudySpec
from search.study.trained import load_trial_model
from search.training.configs import FeaturesConfig
from search.training.core import EpochMetrics, Status, TrainSettings
from spaces import get_space
from tests.conftest import write_image_folder
from tests.spaces.test_finetune_space import CTX

FEATURES_CTX = dataclasses.replace(CTX, feature_layers=("stem", "block3", "block5", "conv_head"), train_size=1257)
LAYERS_ON = {"feat_use_stem": False, "feat_use_block3": True, "feat_use_block5": True, "feat_use_conv_head": False}
LAYER_CHOICES = {
    "feat_pool_block3": "avg",
    "feat_l2_block3": True,
    "feat_pool_block5": "both",
    "feat_l2_block5": False,
    "feat_pca": False,
}
BRANCHES: dict[str, dict[str, object]] = {
    "rf": {
        "rf_n_estimators": 60,
        "rf_min_samples_leaf": 2,
        "rf_max_features": "sqrt",
        "rf_balanced": True,
    },
    "svm": {"svm_kernel": "rbf", "svm_c": 10.0, "svm_gamma": 1e-3},
    "logreg": {"logreg_c": 1.0},
    "sgd": {"sgd_alpha": 1e-4},
}
BIG_DATA_ONLY = {"sgd"}  # offered above the kernel SVM's size limit only


@pytest.mark.parametrize("classifier", sorted(BRANCHES))
def test_each_classifier_branch_through_fixed_trial(classifier: str) -> None:
    params = {**LAYERS_ON, **LAYER_CHOICES, "classifier": classifier, **BRANCHES[classifier]}
    ctx = dataclasses.replace(FEATURES_CTX, train_size=50_000) if classifier in BIG_DATA_ONLY else FEATURES_CTX
    config = get_space("features").suggest(optuna.trial.FixedTrial(params), ctx)
    assert isinstance(config, FeaturesConfig)
    assert config.layers == ("block3", "block5") and config.pooling == ("avg", "both")
    assert config.l2_normalize == (True, False) and config.pca_dims == 0 and config.classifier == classifier
    defaults = FeaturesConfig(layers=("x",), pooling=("avg",), l2_normalize=(False,), pca_dims=0, classifier="rf")
    branch_fields: dict[str, dict[str, object]] = {
        "rf": {"rf_n_estimators": 60, "rf_min_samples_leaf": 2, "rf_max_features": "sqrt", "rf_balanced": True},
        "svm": {"svm_kernel": "rbf", "svm_c": 10.0, "svm_gamma": 1e-3},
        "logreg": {"logreg_c": 1.0},
        "sgd": {"sgd_alpha": 1e-4},
    }
    touched = branch_fields[classifier]
    for name, value in dataclasses.asdict(config).items():  # other branches keep their defaults
        if name.startswith(("rf_", "svm_", "logreg_", "sgd_")):
            assert value == touched.get(name, getattr(defaults, name)), name


def test_only_the_chosen_branch_and_layers_are_suggested() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        try:
            config = get_space("features").suggest(trial, FEATURES_CTX)
        except optuna.TrialPruned:  # no layer chosen
            assert not any(v for k, v in trial.params.items() if k.startswith("feat_use_"))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        branches = {name.split("_")[1] for name in trial.params if name.startswith("clf_") and name != "classifier"}
        assert branches <= {config.classifier}
        for layer in FEATURES_CTX.feature_layers:
            assert (f"feat_pool_{layer}" in trial.params) == (layer in config.layers)
        study.tell(trial, 0.0)


def test_pca_dims_are_suggested_only_with_pca() -> None:
    params = {
        **LAYERS_ON,
        **LAYER_CHOICES,
        "feat_pca": True,
        "pca_dims": 32,
        "classifier": "logreg",
        "logreg_c": 1.0,
    }
    assert get_space("features").suggest(optuna.trial.FixedTrial(params), FEATURES_CTX).pca_dims == 32


class Recorder:
    """A reporter that records what it was told and stops the trial after `stop_after` reports."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.reports: list[EpochMetrics] = []
        self.stop_after = stop_after

    def report(self, epoch: int, metrics: EpochMetrics) -> bool:
        self.reports.append(metrics)
        return self.stop_after is not None and len(self.reports) >= self.stop_after


@pytest.fixture(scope="module")
def pooled(small_digits: Dataset) -> dict[str, np.ndarray]:
    """Pooled EfficientNet features of a few hundred digits: what the cache hands a trial."""
    from search.data.feature_cache import FeatureExtractor
    from search.models.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0")
    extractor = FeatureExtractor(
        backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=torch.device("cpu")
    )
    return extractor(small_digits.images, ("block3", "block5"))


SETTINGS = TrainSettings(max_epochs=1, patience=1, device=torch.device("cpu"), seed=0)


@pytest.mark.parametrize("classifier", sorted(BRANCHES))
def test_trainer_learns_digits_with_each_classifier(
    classifier: str, small_digits: Dataset, pooled: dict[str, np.ndarray]
) -> None:
    config = FeaturesConfig(
        layers=("block3", "block5"),
        pooling=("avg", "both"),
        l2_normalize=(True, True),
        pca_dims=16 if classifier == "svm" else 0,
        classifier=classifier,
        rf_n_estimators=40,
    )
    reporter = Recorder()
    result = train_features(config, small_digits, pooled.__getitem__, reporter, SETTINGS)
    assert result.status is Status.COMPLETE and result.best is not None
    assert result.best.val_accuracy > 0.6  # ten classes: chance is 0.1
    assert len(reporter.reports) == (len(rf_stages(40)) if classifier == "rf" else 1)
    assert result.val_probabilities is not None
    assert result.val_probabilities.shape == ((small_digits.split == VAL).sum(), 10)
    if classifier == "rf":  # a forest reports after each growth stage, as it grows
        assert [m.epoch for m in reporter.reports] == [1, 2, 3, 4]


def test_a_pruned_forest_stops_growing(small_digits: Dataset, pooled: dict[str, np.ndarray]) -> None:
    config = FeaturesConfig(
        layers=("block5",), pooling=("avg",), l2_normalize=(False,), pca_dims=0, classifier="rf", rf_n_estimators=80
    )
    reporter = Recorder(stop_after=2)
    result = train_features(config, small_digits, pooled.__getitem__, reporter, SETTINGS)
    assert result.status is Status.PRUNED and len(result.history) == 2
    assert result.model is None and result.val_probabilities is not None  # figures kept, no model


def _spec(tmp_path: Path, folder: Path, **changes: object) -> StudySpec:
    values: dict[str, object] = {
        "space": "features",
        "trials": 6,
        "data": str(folder),
        "image_size": 32,
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
        "artifact_dir": tmp_path / "artifacts",
        "cache_dir": tmp_path / "cache",
        "max_epochs": 2,
    }
    return StudySpec(**{**values, **changes})  # type: ignore[arg-type]


def _extractions(prepared: PreparedStudy) -> int:
    cache = prepared.resources.prepared.shared
    assert isinstance(cache, FeatureCache)
    return cache.extractions


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=14)


def test_features_study_extracts_once_then_reuses_the_cache(tmp_path: Path, shapes: Path) -> None:
    first = prepare(_spec(tmp_path, shapes))
    assert _extractions(first) == 1 and len(first.data.images) == 0  # streamed into the cache, not held
    run(first)
    study = first.study
    assert len([t for t in study.trials if t.state.is_finished()]) >= 6
    best = study.best_trial
    assert "classifier" in best.user_attrs["config"] and "checkpoint_artifact_id" in best.user_attrs

    again = prepare(_spec(tmp_path, shapes, trials=9))  # the same command with more trials, another process
    assert _extractions(again) == 0
    run(again)
    assert len([t for t in again.study.trials if t.state.is_finished()]) >= 9

    model = load_trial_model(study, study.best_trial, first.resources.artifact_store)
    source = open_source(str(shapes), root=tmp_path)
    data = decode_source(source, image_size=32).with_split(first.data.encoded_split())
    images, labels = data.part(VAL)
    accuracy = float((model.predict_proba(images).argmax(1) == labels.numpy()).mean())
    assert accuracy == pytest.approx(study.best_trial.user_attrs["val_accuracy"])  # the kept model is the trial's


UNFREEZING_SPACE = """
from search.training.configs import FinetuneConfig

def suggest(trial, ctx):
    return FinetuneConfig(
        cut="block4", head_width=32, head_depth=1, head_batchnorm=False, head_dropout=0.0, weight_decay=0.0,
        optimizer="adam", lr=trial.suggest_float("lr", 1e-3, 1e-2, log=True), momentum=0.0, batch_size=16,
        unfreeze_blocks=1, backbone_lr_factor=1.0, head_only_epochs=0, augment="none",
    )
"""


def test_features_of_a_fine_tuned_trial(tmp_path: Path, shapes: Path) -> None:
    space = tmp_path / "unfreeze_block4.py"
    space.write_text(UNFREEZING_SPACE)
    tuned = prepare(_spec(tmp_path, shapes, space=str(space), study_name="ft", trials=2, max_epochs=2, pruner="none"))
    run(tuned)
    best = tuned.study.best_trial
    assert "checkpoint_artifact_id" in best.user_attrs

    tapped = prepare(_spec(tmp_path, shapes, study_name="from-ft", from_trial=f"ft:{best.number}", trials=3))
    cut = "block4"
    assert tapped.context.feature_layers[-2:] == (cut, "head")  # its stages up to the cut, then its head
    assert tapped.data.encoded_split() == tuned.data.encoded_split()  # never tested on what it trained on
    assert tapped.resolved.backbone_weights.startswith(f"trial:ft:{best.number}:")
    run(tapped)
    assert tapped.study.best_trial.value is not None

    imagenet = prepare(_spec(tmp_path, shapes, study_name="imagenet", trials=1))
    ours, theirs = imagenet.resources.prepared.shared, tapped.resources.prepared.shared
    assert not np.allclose(ours.layer(cut), theirs.layer(cut))  # trained
    np.testing.assert_array_equal(ours.layer("block3"), theirs.layer("block3"))  # frozen


@pytest.mark.parametrize(
    ("from_trial", "message"),
    [
        ("ft", "must be STUDY:NUMBER"),
        ("nope:0", "there is no study 'nope'"),
        ("ft:99", "study 'ft' has no trial 99"),
    ],
)
def test_from_trial_mistakes_are_clear(tmp_path: Path, shapes: Path, from_trial: str, message: str) -> None:
    optuna.create_study(study_name="ft", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    with pytest.raises(UserError, match=message):
        prepare(_spec(tmp_path, shapes, from_trial=from_trial))


def test_from_trial_without_a_kept_model_is_clear(tmp_path: Path, shapes: Path) -> None:
    tuned = prepare(_spec(tmp_path, shapes, space="finetune", study_name="ft", trials=1, max_epochs=1, pruner="none"))
    run(tuned)
    trial = tuned.study.best_trial
    (tmp_path / "artifacts" / trial.user_attrs["checkpoint_artifact_id"]).unlink()  # a store copied without it
    with pytest.raises(UserError, match="missing from the artifact store"):
        prepare(_spec(tmp_path, shapes, from_trial=f"ft:{trial.number}"))
    with pytest.raises(UserError, match="not for scratch studies"):
        prepare(_spec(tmp_path, shapes, space="scratch", from_trial=f"ft:{trial.number}"))
