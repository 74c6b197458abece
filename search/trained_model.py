"""Trained models rebuilt from a trial's checkpoint or from an exported bundle, ready to predict.

A model takes uint8 images [N, 3, S, S] decoded like the study's (`search.dataset.decode_image_file`)
and returns class probabilities. A bundle is a folder that needs nothing but this package: the full
network's state dict, the resolved configuration, class names and preprocessing, and for a features
model its fitted scikit-learn pipeline.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from search.backbones import Backbone, as_recorded, create_backbone, freeze
from search.checkpoints import CHECKPOINT_ATTR, load_checkpoint
from search.configs import FeaturesConfig, FinetuneConfig, config_class, config_from_dict
from search.dataset import SPLIT_ATTR
from search.errors import UserError
from search.feature_cache import FeatureExtractor
from search.features_trainer import select_features
from search.finetune_trainer import build_head, stage_split
from search.prefix_cache import normalize_pixels

BUNDLE_FORMAT = "transfer-search-model/1"
BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
PIPELINE_FILE = "pipeline.pkl"
PREDICT_BATCH = 128
CPU = torch.device("cpu")


class TrainedModel(Protocol):
    """Class probabilities for images decoded at `image_size`."""

    class_names: tuple[str, ...]
    image_size: int

    def predict_proba(self, images: torch.Tensor) -> np.ndarray: ...


def finetuned_parts(
    backbone: Backbone, config: FinetuneConfig, state: dict[str, torch.Tensor] | None, num_classes: int
) -> tuple[OrderedDict[str, nn.Module], nn.Sequential]:
    """The stages up to the cut with the trial's trained ones loaded (copies), and its head (untrained: state None)."""
    frozen, cut = stage_split(backbone, config)
    stages = OrderedDict((name, copy.deepcopy(backbone.stages[name])) for name in backbone.stage_names[:cut])
    head = build_head(backbone.channels_at(config.cut), config, num_classes)
    if state is not None:
        trunk = nn.Sequential(*list(stages.values())[frozen:cut])
        trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in state.items() if k.startswith("trunk.")})
        head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
    return stages, head


def finetuned_tap_model(
    stages: OrderedDict[str, nn.Module], head: nn.Sequential
) -> tuple[nn.Sequential, dict[str, str]]:
    """A fine-tuned network to tap: its stages, then its head's last hidden layer as the layer `head`."""
    parts = OrderedDict(stages)
    parts["head"] = head[:-1]  # pooled, hidden layers; the classifier itself is not a feature
    model = nn.Sequential(parts)
    freeze(model)
    return model, {name: name for name in parts}


@dataclass
class FinetuneModel:
    """A fine-tuned network: the stages up to the cut and the trained head."""

    network: nn.Sequential
    config: FinetuneConfig
    backbone: str
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        self.network.to(self.device).eval()
        chunks = [
            self.network(normalize_pixels(batch.to(self.device), self.mean, self.std)).float().softmax(1).cpu().numpy()
            for batch in images.split(PREDICT_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), np.float32)


@dataclass
class FeaturesModel:
    """Tapped, pooled backbone layers into a fitted scikit-learn pipeline."""

    extractor: FeatureExtractor
    config: FeaturesConfig
    pipeline: Any
    backbone: str
    class_names: tuple[str, ...]
    image_size: int
    source_config: FinetuneConfig | None = None  # the fine-tuned network tapped (--from-trial), if any

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        chunks = []
        for batch in images.split(PREDICT_BATCH):
            pooled = self.extractor(batch, self.config.layers)
            chunks.append(self.pipeline.predict_proba(select_features(self.config, pooled.__getitem__)))
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), np.float32)


def _finished_trial(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> FrozenTrial:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        raise UserError(f"there is no study '{study_name}' in this storage; check --from-trial or --storage") from None
    try:
        trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))
    except KeyError:
        raise UserError(f"study '{study_name}' has no trial {number}") from None
    if trial.state != TrialState.COMPLETE:
        raise UserError(f"trial {number} of study '{study_name}' is {trial.state.name.lower()}, not complete")
    return trial


def study_record(storage: optuna.storages.BaseStorage, study_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study's stored spec and data record."""
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
    return attrs.get("spec", {}), attrs.get("data", {})


def _backbone_of(spec: dict[str, Any]) -> Backbone:
    weights = Path(spec["weights"]) if spec.get("weights") else None
    backbone = create_backbone(spec["backbone"], pretrained=spec.get("pretrained", "imagenet"), weights_file=weights)
    return as_recorded(backbone, spec)


def parse_from_trial(text: str) -> tuple[str, int]:
    study_name, _, number = text.rpartition(":")
    if not study_name or not number.isdigit():
        raise UserError(f"--from-trial '{text}' must be STUDY:NUMBER, e.g. finetune-digits-efficientnet_lite0:12")
    return study_name, int(number)


@dataclass(frozen=True)
class FineTunedSource:
    """A finished finetune trial whose network a features study taps."""

    study_name: str
    trial: FrozenTrial
    config: FinetuneConfig
    stages: OrderedDict[str, nn.Module]
    head: nn.Sequential
    spec: dict[str, Any]
    data: dict[str, Any]
    split: str  # the source study's split: a features study on its data adopts it

    @property
    def weights_id(self) -> str:
        return f"trial:{self.study_name}:{self.trial.number}:{self.trial.user_attrs[CHECKPOINT_ATTR]}"

    def tap_model(self) -> tuple[nn.Sequential, dict[str, str]]:
        return finetuned_tap_model(self.stages, self.head)


def fine_tuned_source(
    text: str, storage: optuna.storages.BaseStorage, store: Any, *, backbone: Backbone | None = None
) -> FineTunedSource:
    """The network of `STUDY:NUMBER` (a finished finetune trial that kept its model); clear errors otherwise."""
    study_name, number = parse_from_trial(text)
    trial = _finished_trial(storage, study_name, number)
    if "cut" not in trial.user_attrs.get("config", {}):
        raise UserError(f"trial {number} of study '{study_name}' is not a finetune trial; --from-trial needs one")
    spec, data = study_record(storage, study_name)
    config = config_from_dict(FinetuneConfig, trial.user_attrs["config"])
    state = load_checkpoint(trial, store, study_name=study_name)
    backbone = backbone or _backbone_of(spec)
    stages, head = finetuned_parts(backbone, config, state, len(data["classes"]))
    split = storage.get_study_system_attrs(storage.get_study_id_from_name(study_name)).get(SPLIT_ATTR, "")
    return FineTunedSource(study_name, trial, config, stages, head, spec, data, split)


def load_trial_model(
    study: optuna.Study, trial: FrozenTrial, store: Any, *, device: torch.device = CPU
) -> TrainedModel:
    """The trained model of a finished trial that kept one (the study's best does)."""
    storage = study._storage
    spec, data = study_record(storage, study.study_name)
    class_names, image_size = tuple(data["classes"]), int(spec["image_size"])
    backbone = _backbone_of(spec)
    config_values = trial.user_attrs.get("config", {})
    checkpoint = load_checkpoint(trial, store, study_name=study.study_name)
    if config_class(config_values) is FinetuneConfig:
        config = config_from_dict(FinetuneConfig, config_values)
        stages, head = finetuned_parts(backbone, config, checkpoint, len(class_names))
        network = nn.Sequential(OrderedDict([*stages.items(), ("head", head)]))
        return FinetuneModel(
            network, config, backbone.name, class_names, image_size, backbone.mean, backbone.std, device
        )
    features_config = config_from_dict(FeaturesConfig, config_values)
    source_config = None
    if spec.get("from_trial"):
        source = fine_tuned_source(spec["from_trial"], storage, store, backbone=backbone)
        tap_model, taps = source.tap_model()
        source_config = source.config
    else:
        tap_model, taps = backbone.tap_model(), backbone.taps
    extractor = FeatureExtractor(tap_model, taps, mean=backbone.mean, std=backbone.std, device=device)
    return FeaturesModel(extractor, features_config, checkpoint, backbone.name, class_names, image_size, source_config)


def save_bundle(model: TrainedModel, out: Path) -> None:
    """Write a self-contained folder: weights, configuration, class names, preprocessing (and pipeline)."""
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "class_names": list(model.class_names),
        "image_size": model.image_size,
        "preprocessing": "RGB, EXIF-upright, shorter side to image_size, centre crop, /255, (x - mean) / std",
    }
    if isinstance(model, FinetuneModel):
        record |= {"kind": "finetune", "backbone": model.backbone, "config": asdict(model.config)}
        record |= {"mean": list(model.mean), "std": list(model.std)}
        torch.save(model.network.state_dict(), out / WEIGHTS_FILE)
    elif isinstance(model, FeaturesModel):
        record |= {"kind": "features", "backbone": model.backbone, "config": asdict(model.config)}
        record |= {"mean": list(model.extractor.mean), "std": list(model.extractor.std), "taps": model.extractor.taps}
        record["source_config"] = asdict(model.source_config) if model.source_config else None
        torch.save(model.extractor.model.state_dict(), out / WEIGHTS_FILE)
        (out / PIPELINE_FILE).write_bytes(pickle.dumps(model.pipeline))
    else:
        raise TypeError(f"cannot bundle a {type(model).__name__}")
    (out / BUNDLE_FILE).write_text(json.dumps(record, indent=2))


def load_bundle(path: Path, *, device: torch.device = CPU) -> TrainedModel:
    """A model from a folder written by `save_bundle`; anything else is a one-line error."""
    try:
        record = json.loads((path / BUNDLE_FILE).read_text())
        if record.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        return _model_from_record(path, record, device)
    except UserError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise UserError(
            f"{path} is not a model bundle this version can read ({reason}); write one with python -m search export"
        ) from None


def _model_from_record(path: Path, record: dict[str, Any], device: torch.device) -> TrainedModel:
    backbone = create_backbone(record["backbone"], pretrained="none")  # the bundle's weights replace all of it
    class_names, image_size = tuple(record["class_names"]), int(record["image_size"])
    mean, std = tuple(record["mean"]), tuple(record["std"])
    state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    if record["kind"] == "finetune":
        config = config_from_dict(FinetuneConfig, record["config"])
        stages, head = finetuned_parts(backbone, config, None, len(class_names))
        network = nn.Sequential(OrderedDict([*stages.items(), ("head", head)]))
        network.load_state_dict(state)
        return FinetuneModel(network, config, backbone.name, class_names, image_size, mean, std, device)
    features_config = config_from_dict(FeaturesConfig, record["config"])
    source_config = config_from_dict(FinetuneConfig, record["source_config"]) if record.get("source_config") else None
    if source_config is not None:
        stages, head = finetuned_parts(backbone, source_config, None, len(class_names))
        tap_model, taps = finetuned_tap_model(stages, head)
    else:
        tap_model, taps = backbone.tap_model(), backbone.taps
    tap_model.load_state_dict(state)
    if record["taps"] != taps:
        raise ValueError("the bundle's layer taps do not match this backbone")
    extractor = FeatureExtractor(tap_model, taps, mean=mean, std=std, device=device)
    pipeline = pickle.loads((path / PIPELINE_FILE).read_bytes())
    return FeaturesModel(extractor, features_config, pipeline, backbone.name, class_names, image_size, source_config)
