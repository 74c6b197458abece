"""Study kinds as plug-ins: the registry, each kind's checkpoint, rebuilt model, bundle, description and input size."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

from search.bundle_format import BUNDLE_FILE
from search.data.dataset import Dataset
from search.data.feature_cache import FeatureExtractor
from search.data.pixels import normalize_pixels
from search.data.sources import TEST, TRAIN, VAL
from search.errors import UserError
from search.kinds import (
    BuildsOwnNetwork,
    ExportsOnnx,
    GivesNetwork,
    MeasuresCosts,
    ModelInputs,
    Prepared,
    SavesModels,
    SourceTrial,
    StudyKind,
    TakesSource,
    TrainedModel,
    exporting_onnx,
    get_kind,
    giving_network,
    kind_names,
    kind_of_config,
    saving_models,
    stands_on_backbone,
    taking_source,
)
from search.kinds.features.kind import FeaturesKind, FeaturesModel
from search.kinds.features.trainer import build_pipeline, layer_widths, select_features
from search.kinds.finetune.kind import FinetuneKind, FinetuneModel
from search.kinds.finetune.trainer import train_finetune
from search.kinds.model_files import read_model, unzip_model, write_model, zip_model
from search.kinds.registry import register_kind
from search.models.backbones import Backbone
from search.training.configs import FeaturesConfig, SpaceContext
from search.training.core import NullReporter, Status, TrainSettings, TrialResult
from tests.helpers import head_config

CPU = torch.device("cpu")
SETTINGS = TrainSettings(max_epochs=1, patience=1, device=CPU, seed=0)
FINETUNE = head_config(  # block7 trained: the checkpoint holds trunk and head tensors
    cut="block7",
    head_width=32,
    head_depth=1,
    head_batchnorm=True,
    head_dropout=0.1,
    weight_decay=1e-4,
    optimizer="adamw",
    lr=3e-3,
    batch_size=32,
    unfreeze_blocks=1,
    label_smoothing=0.1,
)
FEATURES = FeaturesConfig(
    layers=("block6", "conv_head"),
    pooling=("avg", "both"),
    l2_normalize=(True, False),
    pca_dims=16,
    classifier="logreg",
    logreg_c=0.1,
)
TAPPED = FeaturesConfig(
    layers=("block7", "head"), pooling=("avg", "max"), l2_normalize=(False, True), pca_dims=0, classifier="logreg"
)


def stored(values: dict[str, Any]) -> dict[str, Any]:
    """As a study's storage hands it back: through JSON, tuples as lists."""
    return dict(json.loads(json.dumps(values)))


@pytest.fixture(scope="module")
def tuned(small_digits: Dataset, backbone: Backbone) -> TrialResult:
    """One epoch of a real finetune trial that unfreezes block7: its kept model is a checkpoint to round-trip."""
    result = train_finetune(FINETUNE, small_digits, backbone, NullReporter(), SETTINGS)
    assert result.status is Status.COMPLETE and result.model is not None
    return result


def fitted(config: FeaturesConfig, extractor: FeatureExtractor, data: Dataset) -> Pipeline:
    """The pipeline a features trial fits, on the real pooled features of the training digits."""
    images, labels = data.part(TRAIN)
    pooled = extractor(images, config.layers)
    pipeline = build_pipeline(config, layer_widths(config, pooled.__getitem__), labels.numpy(), seed=0, threads=1)
    return pipeline.fit(select_features(config, pooled.__getitem__), labels.numpy())


def imagenet_extractor(backbone: Backbone) -> FeatureExtractor:
    return FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=CPU)


@pytest.fixture(scope="module")
def pipeline(small_digits: Dataset, backbone: Backbone) -> Pipeline:
    return fitted(FEATURES, imagenet_extractor(backbone), small_digits)


def bundle_round_trip(model: TrainedModel, folder: Path) -> TrainedModel:
    """Write the model's folder (what a trial keeps and export writes) and read it back."""
    write_model(model, folder)
    return read_model(folder)


@pytest.fixture(scope="module")
def tuned_model(tuned: TrialResult, backbone: Backbone, small_digits: Dataset) -> FinetuneModel:
    """The finetune trial's model, as it keeps it."""
    inputs = ModelInputs(backbone=backbone, class_names=small_digits.class_names, image_size=small_digits.image_size)
    model = get_kind("finetune").trained_model(stored(dataclasses.asdict(FINETUNE)), tuned.model, inputs)
    assert isinstance(model, FinetuneModel)
    return model


def source_trial(data: Dataset, backbone: Backbone, tuned: FinetuneModel) -> SourceTrial:
    """The finetune trial as --from-trial reads it back."""
    return SourceTrial(
        study_name="ft",
        number=0,
        kind="finetune",
        config=stored(dataclasses.asdict(FINETUNE)),
        model=tuned,
        checkpoint_id="abc",
        backbone=backbone.name,
        pretrained="imagenet",
        weights=None,
        mean=backbone.mean,
        std=backbone.std,
        image_size=data.image_size,
        classes=data.class_names,
        fingerprint=data.fingerprint,
        split="",
    )


# --- the registry ---


def test_both_kinds_are_registered_by_name() -> None:
    assert {"finetune", "features"} <= set(kind_names())
    assert isinstance(get_kind("finetune"), FinetuneKind)
    assert isinstance(get_kind("features"), FeaturesKind)


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown study kind 'tabular'") as raised:
        get_kind("tabular")
    assert "finetune" in str(raised.value) and "features" in str(raised.value)


@pytest.mark.parametrize(("config", "name"), [(FINETUNE, "finetune"), (FEATURES, "features")])
def test_a_config_belongs_to_its_kind(config: object, name: str) -> None:
    assert kind_of_config(config).name == name


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.asdict(FINETUNE),  # the values, not the config
        SpaceContext("efficientnet_lite0", ("block7",), {"block7": 8}, num_classes=10, train_size=100, device="cpu"),
    ],
)
def test_another_object_is_no_kinds_config(other: object) -> None:
    with pytest.raises(UserError, match=f"returned a {type(other).__name__}") as raised:
        kind_of_config(other)
    assert "FinetuneConfig" in str(raised.value) and "FeaturesConfig" in str(raised.value)


def test_registering_a_kind_name_twice_is_loud() -> None:
    class Again(FinetuneKind):
        name = "finetune"

    with pytest.raises(ValueError, match="'finetune' is already registered"):
        register_kind(Again)
    assert type(get_kind("finetune")) is FinetuneKind  # the first registration stands


# --- kept models ---


def test_a_kept_model_is_one_zip_of_the_folder_export_writes(
    tmp_path: Path, backbone: Backbone, small_digits: Dataset, pipeline: Pipeline
) -> None:
    inputs = ModelInputs(backbone=backbone, class_names=small_digits.class_names, image_size=small_digits.image_size)
    model = get_kind("features").trained_model(stored(dataclasses.asdict(FEATURES)), pipeline, inputs)
    archive = tmp_path / "model.zip"
    zip_model(model, archive)
    write_model(model, tmp_path / "export")
    with zipfile.ZipFile(archive) as packed:
        assert sorted(packed.namelist()) == sorted(p.name for p in (tmp_path / "export").iterdir())
        assert json.loads(packed.read(BUNDLE_FILE)) == json.loads((tmp_path / "export" / BUNDLE_FILE).read_text())
    back = unzip_model(archive)
    images = small_digits.part(TEST)[0][:6]
    np.testing.assert_allclose(back.predict_proba(images), model.predict_proba(images), atol=1e-6)


# --- trained models and bundles ---


def test_finetune_model_predicts_what_its_trial_validated_and_survives_a_bundle(
    tmp_path: Path, backbone: Backbone, small_digits: Dataset, tuned: TrialResult
) -> None:
    before = {k: v.clone() for k, v in backbone.stages["block7"].state_dict().items()}
    inputs = ModelInputs(backbone=backbone, class_names=small_digits.class_names, image_size=small_digits.image_size)
    model = get_kind("finetune").trained_model(stored(dataclasses.asdict(FINETUNE)), tuned.model, inputs)
    assert isinstance(model, FinetuneModel) and model.config == FINETUNE
    val = small_digits.part(VAL)[0]
    assert tuned.val_probabilities is not None
    np.testing.assert_allclose(model.predict_proba(val), tuned.val_probabilities, atol=1e-5)

    trained = model.network.get_submodule("block7").state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in before.items())  # the checkpoint's block7 was loaded...
    assert all(torch.equal(backbone.stages["block7"].state_dict()[k], v) for k, v in before.items())  # ...into a copy

    loaded = bundle_round_trip(model, tmp_path)
    assert isinstance(loaded, FinetuneModel)
    assert (loaded.kind, loaded.class_names, loaded.image_size) == ("finetune", small_digits.class_names, 32)
    assert loaded.config == FINETUNE and (loaded.mean, loaded.std) == (backbone.mean, backbone.std)
    images = small_digits.part(TEST)[0][:6]
    np.testing.assert_allclose(loaded.predict_proba(images), model.predict_proba(images), atol=1e-6)
    assert loaded.predict_proba(images[:0]).shape == (0, small_digits.num_classes)


def test_features_model_predicts_with_its_pipeline_and_survives_a_bundle(
    tmp_path: Path, backbone: Backbone, small_digits: Dataset, pipeline: Pipeline
) -> None:
    inputs = ModelInputs(backbone=backbone, class_names=small_digits.class_names, image_size=small_digits.image_size)
    model = get_kind("features").trained_model(stored(dataclasses.asdict(FEATURES)), pipeline, inputs)
    assert isinstance(model, FeaturesModel) and model.config == FEATURES and model.source_config is None
    images = small_digits.part(TEST)[0][:6]
    pooled = imagenet_extractor(backbone)(images, FEATURES.layers)
    expected = pipeline.predict_proba(select_features(FEATURES, pooled.__getitem__))
    np.testing.assert_allclose(model.predict_proba(images), expected, atol=1e-6)

    loaded = bundle_round_trip(model, tmp_path)
    assert isinstance(loaded, FeaturesModel)
    assert (loaded.kind, loaded.class_names, loaded.image_size) == ("features", small_digits.class_names, 32)
    assert loaded.config == FEATURES and loaded.extractor.taps == backbone.taps
    assert (loaded.extractor.mean, loaded.extractor.std) == (backbone.mean, backbone.std)
    np.testing.assert_allclose(loaded.predict_proba(images), model.predict_proba(images), atol=1e-6)


def test_features_of_a_finetune_trial_tap_its_network_and_survive_a_bundle(
    tmp_path: Path, backbone: Backbone, small_digits: Dataset, tuned_model: FinetuneModel
) -> None:
    source = source_trial(small_digits, backbone, tuned_model)
    tap_model, taps = giving_network(get_kind("finetune")).tap_model(
        source.config, source.model, backbone, small_digits.num_classes
    )
    extractor = FeatureExtractor(tap_model, taps, mean=backbone.mean, std=backbone.std, device=CPU)
    tapped_pipeline = fitted(TAPPED, extractor, small_digits)
    inputs = ModelInputs(backbone, small_digits.class_names, small_digits.image_size, source=source)
    model = get_kind("features").trained_model(dataclasses.asdict(TAPPED), tapped_pipeline, inputs)
    assert isinstance(model, FeaturesModel) and model.source_kind == "finetune"
    images = small_digits.part(TEST)[0][:6]
    expected = tapped_pipeline.predict_proba(select_features(TAPPED, extractor(images, TAPPED.layers).__getitem__))
    np.testing.assert_allclose(model.predict_proba(images), expected, atol=1e-6)

    loaded = bundle_round_trip(model, tmp_path)
    assert isinstance(loaded, FeaturesModel)
    assert (loaded.source_kind, loaded.source_config) == ("finetune", source.config)
    np.testing.assert_allclose(loaded.predict_proba(images), model.predict_proba(images), atol=1e-6)


# --- tap models, descriptions, input sizes ---


def test_a_kinds_capabilities_are_what_it_can_do() -> None:
    """Asked by protocol, never by name: who may stand on a trial's network, whose trials give one."""
    finetune, features, scratch = get_kind("finetune"), get_kind("features"), get_kind("scratch")
    assert isinstance(finetune, TakesSource) and isinstance(features, TakesSource)
    assert not isinstance(scratch, TakesSource)
    assert isinstance(finetune, GivesNetwork) and isinstance(scratch, GivesNetwork)
    assert not isinstance(features, GivesNetwork)
    assert isinstance(scratch, BuildsOwnNetwork) and not isinstance(finetune, BuildsOwnNetwork)
    assert stands_on_backbone(finetune) and stands_on_backbone(features) and not stands_on_backbone(scratch)
    with pytest.raises(UserError, match="needs a finetune or scratch trial"):
        giving_network(features)
    with pytest.raises(UserError, match="--from-trial is not for scratch studies"):
        taking_source(scratch)
    for kind in (finetune, features, scratch):  # what the shipped kinds all do: keep, export, time their models
        assert isinstance(kind, SavesModels) and isinstance(kind, ExportsOnnx) and isinstance(kind, MeasuresCosts)


class CoreOnly(StudyKind):
    """A kind with the core protocol alone: it prepares, trains and describes, and can do nothing more."""

    name = "core-only"
    config_type = FeaturesConfig

    def prepare(self, source: Any, inputs: Any) -> Prepared:
        raise NotImplementedError

    def train(self, config: Any, prepared: Prepared, backbone: Backbone, reporter: Any, settings: Any) -> TrialResult:
        raise NotImplementedError

    def test_images(self, prepared: Prepared) -> None:
        return None

    def trained_model(self, config: Any, parts: Any, inputs: ModelInputs) -> TrainedModel:
        raise NotImplementedError

    def describe(self, params: dict[str, Any]) -> list[tuple[str, Any]]:
        return list(params.items())


def test_a_kind_is_its_core_and_the_rest_is_asked_for() -> None:
    """Five methods make a kind; keeping, exporting and timing models are capabilities it may lack."""
    kind = CoreOnly()
    assert not isinstance(kind, SavesModels | ExportsOnnx | MeasuresCosts | TakesSource | GivesNetwork)
    assert stands_on_backbone(kind)
    with pytest.raises(UserError, match="core-only models cannot be saved or exported") as saving:
        saving_models(kind)
    with pytest.raises(UserError, match="core-only models have no ONNX graph") as onnx:
        exporting_onnx(kind)
    assert "\n" not in str(saving.value) + str(onnx.value)


def test_a_finetune_tap_model_is_its_stages_then_its_head(
    tuned_model: FinetuneModel, backbone: Backbone, small_digits: Dataset
) -> None:
    config = dataclasses.asdict(FINETUNE)
    model, taps = giving_network(get_kind("finetune")).tap_model(
        config, tuned_model, backbone, small_digits.num_classes
    )
    cut = backbone.stage_names.index(FINETUNE.cut) + 1
    assert list(taps) == [*backbone.stage_names[:cut], "head"]
    assert all(node in dict(model.named_children()) for node in taps.values())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    x = normalize_pixels(small_digits.images[:3], backbone.mean, backbone.std)
    assert model(x).shape == (3, FINETUNE.head_width)  # the last hidden layer, not the 10 class scores

    shape_only, _ = giving_network(get_kind("finetune")).tap_model(config, None, backbone, small_digits.num_classes)
    trained, untrained = model.state_dict(), shape_only.state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in untrained.items()}
    assert not torch.equal(trained["head.3.weight"], untrained["head.3.weight"])  # the checkpoint's hidden Linear


def test_finetune_describe_picks_the_key_choices_in_order() -> None:
    params = {
        "augment": "light",
        "cut": "block6",
        "head_depth": 1,
        "head_width": 256,
        "head_batchnorm": True,
        "head_dropout": 0.21,
        "label_smoothing": 0.05,
        "weight_decay": 3e-5,
        "optimizer": "sgd",
        "lr@sgd": 0.02,
        "batch_size": 32,
        "unfreeze_blocks": 2,
        "backbone_lr_factor": 0.1,
    }
    assert get_kind("finetune").describe(params) == [
        ("cut", "block6"),
        ("unfreeze_blocks", 2),
        ("optimizer", "sgd"),
        ("lr", 0.02),
        ("batch_size", 32),
        ("augment", "light"),
    ]
    other = {"lr": 0.1, "width": 3, "depth": 1, "dropout": 0.2, "decay": 0.0, "momentum": 0.9, "seed": 4}
    assert get_kind("finetune").describe(other) == list(other.items())  # a custom space shows in full


def test_features_describe_names_the_layers_then_the_classifier() -> None:
    params = {
        "feat_use_stem": False,
        "feat_use_block6": True,
        "feat_pool_block6": "avg",
        "feat_l2_block6": True,
        "feat_use_block7": False,
        "feat_use_conv_head": True,
        "feat_pool_conv_head": "both",
        "feat_l2_conv_head": False,
        "feat_pca": True,
        "pca_dims": 32,
        "classifier": "svm",
        "svm_kernel": "rbf",
        "svm_c": 3.0,
        "svm_gamma": 1e-3,
    }
    assert get_kind("features").describe(params) == [
        ("layers", "block6+conv_head"),
        ("pca_dims", 32),
        ("classifier", "svm"),
        ("svm_kernel", "rbf"),
        ("svm_c", 3.0),
        ("svm_gamma", 1e-3),
    ]


@pytest.mark.parametrize(
    ("kind", "images", "device", "size"),
    [
        ("finetune", 600, "cpu", 224),
        ("finetune", 4000, "cpu", 224),  # native size on every device: what a trial may cost is planned instead
        ("finetune", 4000, "cuda", 224),
        ("features", 600, "cpu", 224),
        ("features", 4000, "cpu", 224),  # one extraction pass: always the backbone's native size
    ],
)
def test_input_size_by_kind_images_and_device(
    backbone: Backbone, kind: str, images: int, device: str, size: int
) -> None:
    chosen = get_kind(kind).input_size(
        native=32, backbone=backbone, pretrained=True, images=images, device=torch.device(device)
    )
    assert chosen == size
