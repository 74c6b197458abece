"""The features kind: pooled backbone layers, extracted once into an on-disk cache, into a classical classifier."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search.data.dataset import dataset_of, decoded_batches, warn_ignored
from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey, TokenLayout, pool
from search.data.sources import ImageSource
from search.kinds.base import (
    InferenceParts,
    KindInputs,
    ModelInputs,
    Part,
    Prepared,
    SourceTrial,
    StudyKind,
    giving_network,
    network_size,
    stands_on_backbone,
)
from search.kinds.features.pipeline_files import (
    SKOPS_SUFFIX,
    dump_pipeline,
    fitted_bytes,
    fitted_numbers,
    load_pipeline,
    pipeline_to_onnx,
)
from search.kinds.features.trainer import pooled_columns, select_features, train_features
from search.kinds.registry import get_kind, register_kind
from search.kinds.transfer import transferred_backbone
from search.kinds.weights_file import read_weights, write_weights
from search.models.backbones import Backbone, create_backbone
from search.models.onnx_graphs import OPSET, FromPixels, chain, module_to_onnx
from search.training.configs import BACKBONE_PARAM, FeaturesConfig, config_from_dict, plain_params
from search.training.core import Reporter, TrainSettings, TrialResult

log = logging.getLogger(__name__)

EXTRACT_BATCH = 64  # images decoded and run through the backbone at once while filling the feature cache
PREDICT_BATCH = 128
# the parameters of a features trial's pipeline (FeaturesConfig's fields), for its console line
PIPELINE_PARAMS = {f.name for f in fields(FeaturesConfig)} - {"layers", "pooling", "l2_normalize"}
FEATURES = "features"  # the ONNX value between the tapped network and the pipeline
PIPELINE_FILE = f"pipeline{SKOPS_SUFFIX}"  # skops: loading rebuilds trusted types only, runs no code


@dataclass
class FeaturesModel:
    """Tapped, pooled backbone layers into a fitted scikit-learn pipeline."""

    extractor: FeatureExtractor
    config: FeaturesConfig
    pipeline: Any
    backbone: str
    class_names: tuple[str, ...]
    image_size: int
    source_config: dict[str, Any] | None = None  # the config of the trained network tapped (--from-trial), if any
    source_kind: str | None = None
    source_classes: int | None = None  # the tapped network's classes: its head's shape
    kind: str = "features"

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        chunks = []
        for batch in images.split(PREDICT_BATCH):
            pooled = self.extractor(batch, self.config.layers)
            chunks.append(self.pipeline.predict_proba(select_features(self.config, pooled.__getitem__)))
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), np.float32)


class HookedTaps(nn.Module):
    """{layer: output} of chosen taps from hooks on the network, stopping after the deepest: no tracing."""

    def __init__(self, extractor: FeatureExtractor, layers: tuple[str, ...]) -> None:
        super().__init__()
        self.extractor = extractor
        self.layers = layers

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.extractor.ready_times(images, self.layers)[1]


class PooledLayers(nn.Module):
    """The chosen layers' pooled vectors side by side, laid out as `select_features` lays them: the pipeline's input."""

    def __init__(self, tapped: nn.Module, config: FeaturesConfig, tokens: TokenLayout) -> None:
        super().__init__()
        self.tapped = tapped
        self.choices = list(zip(config.layers, config.pooling, strict=True))
        self.tokens = tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.tapped(images)
        columns = [pooled_columns(pool(outputs[layer], self.tokens), pooling) for layer, pooling in self.choices]
        return torch.cat(columns, dim=1)


def prefix_modules(model: nn.Module, node: str) -> nn.Module:
    """The modules a nest of Sequentials runs up to and including `node` (a dotted path), as one module to count.

    A module on the path that is not a Sequential has no order to cut at, and counts whole.
    """
    head, _, rest = node.partition(".")
    if not isinstance(model, nn.Sequential):
        return model
    kept: list[nn.Module] = []
    for name, child in model.named_children():
        if name == head:
            kept.append(prefix_modules(child, rest) if rest else child)
            break
        kept.append(child)
    return nn.ModuleList(kept)


def tap_timer(extractor: FeatureExtractor) -> Callable[[torch.Tensor], dict[Hashable, float]] | None:
    """One pass of the taps that notes when each tapped layer's output is ready (ms from the start).

    None when a tap is not a module's output (nothing to hook): each layer set is then timed on its own.
    """
    if not extractor.hookable:
        return None

    def run(images: torch.Tensor) -> dict[Hashable, float]:
        ready, _ = extractor.ready_times(images.to(extractor.device))
        return {layer: ms for layer, ms in ready.items()}

    return run


def stream_features(source: ImageSource, extractor: FeatureExtractor, inputs: KindInputs) -> Prepared:
    """Fill (or reuse) the on-disk feature cache by streaming the images; the dataset keeps labels only."""
    key = FeatureKey(
        inputs.backbone.name,
        inputs.weights,
        inputs.image_size,
        source.fingerprint(),
        len(source),
        extractor.mean,
        extractor.std,
        extractor.tokens,
    )
    cache = FeatureCache(inputs.cache_dir, key, extractor)
    warn_ignored(source)
    good = cache.ensure(
        lambda: decoded_batches(source, image_size=key.image_size, cache_dir=inputs.cache_dir, batch_size=EXTRACT_BATCH)
    )
    if not cache.extractions and not good.all():
        log.warning("skipping %d images that could not be read when their features were cached", int((~good).sum()))
    data = dataset_of(source, good, None, image_size=key.image_size)
    return Prepared(data=data, shared=cache, feature_layers=extractor.layers)


def _extractor(inputs: ModelInputs | KindInputs) -> FeatureExtractor:
    """The backbone's taps, or those of the source trial's network."""
    backbone = inputs.backbone
    source = inputs.source
    if source is None:
        return FeatureExtractor(
            backbone.tap_model(),
            backbone.taps,
            mean=backbone.mean,
            std=backbone.std,
            device=inputs.device,
            tokens=TokenLayout.of(backbone),
        )
    tap_model, taps = giving_network(get_kind(source.kind)).tap_model(
        source.config,
        source.model,
        backbone,
        len(source.classes),  # the base it stood on (source_backbone)
    )
    tokens = TokenLayout.of(backbone)  # a fine-tuned source's stages are its base's
    return FeatureExtractor(tap_model, taps, mean=source.mean, std=source.std, device=inputs.device, tokens=tokens)


@register_kind
class FeaturesKind(StudyKind):
    """Labels in memory, pooled features on disk (shared by trials, studies and workers), no images held."""

    name = "features"
    config_type = FeaturesConfig

    def source_backbone(self, source: SourceTrial, base: Backbone) -> Backbone:
        """The study's own backbone under a fine-tuned source (whose stages stand on it); a scratch network alone."""
        return base if stands_on_backbone(get_kind(source.kind)) else transferred_backbone(source)

    def prepare(self, source: ImageSource, inputs: KindInputs) -> Prepared:
        return stream_features(source, _extractor(inputs), inputs)

    def train(
        self, config: Any, prepared: Prepared, backbone: Backbone, reporter: Reporter, settings: TrainSettings
    ) -> TrialResult:
        return train_features(config, prepared.data, prepared.shared.layer, reporter, settings)

    def test_images(self, prepared: Prepared) -> Part | None:
        return None  # images were streamed into the feature cache, never held

    def trained_model(self, config: Any, parts: Any, inputs: ModelInputs) -> FeaturesModel:
        return FeaturesModel(
            _extractor(inputs),
            config_from_dict(FeaturesConfig, config),
            parts,
            inputs.backbone.name,
            inputs.class_names,
            inputs.image_size,
            inputs.source.config if inputs.source else None,
            inputs.source.kind if inputs.source else None,
            len(inputs.source.classes) if inputs.source else None,
        )

    def write_bundle(self, model: Any, folder: Path) -> dict[str, Any]:
        write_weights(model.extractor.model, folder)
        (folder / PIPELINE_FILE).write_bytes(dump_pipeline(model.pipeline))
        return {
            "backbone": model.backbone,
            "config": asdict(model.config),
            "mean": list(model.extractor.mean),
            "std": list(model.extractor.std),
            "taps": model.extractor.taps,
            "source_config": model.source_config,
            "source_kind": model.source_kind,
            "source_classes": model.source_classes,
        }

    def read_bundle(self, record: dict[str, Any], folder: Path, device: torch.device) -> FeaturesModel:
        class_names = tuple(record["class_names"])
        source_config = record.get("source_config")
        source_kind, source_classes = record.get("source_kind"), record.get("source_classes")
        if source_config:  # the tapped trial's network, shape only: a scratch one stood on no backbone
            assert source_kind is not None and source_classes is not None, "write_bundle records the source's kind"
            giver = get_kind(source_kind)
            backbone = create_backbone(record["backbone"], pretrained="none") if stands_on_backbone(giver) else None
            tap_model, taps = giving_network(giver).tap_model(source_config, None, backbone, source_classes)
        else:
            backbone = create_backbone(record["backbone"], pretrained="none")  # the bundle's weights replace all of it
            tap_model, taps = backbone.tap_model(), backbone.taps
        read_weights(tap_model, folder)
        if record["taps"] != taps:
            raise ValueError("the bundle's layer taps do not match this backbone")
        mean, std = tuple(record["mean"]), tuple(record["std"])
        extractor = FeatureExtractor(
            tap_model,
            taps,
            mean=mean,
            std=std,
            device=device,
            tokens=TokenLayout.of(backbone) if backbone else TokenLayout(),
        )
        pipeline = load_pipeline((folder / PIPELINE_FILE).read_bytes(), what=PIPELINE_FILE, remedy="export it again")
        config = config_from_dict(FeaturesConfig, record["config"])
        size = int(record["image_size"])
        return FeaturesModel(
            extractor,
            config,
            pipeline,
            record["backbone"],
            class_names,
            size,
            source_config,
            source_kind,
            source_classes,
        )

    def inference_parts(self, config: Any, model: Any, prepared: Prepared, backbone: Backbone) -> InferenceParts:
        """The taps up to the trial's deepest layer, then its pipeline.

        The taps' time comes from the tap timer's one pass (or the extraction's), so the trunk only
        has to produce the pipeline's input. The size counted is that of the layers up to the deepest tap.
        """
        extractor = prepared.shared.extractor
        deepest = max(config.layers, key=extractor.layers.index)
        tap_times = tap_timer(extractor)
        prefix = extractor.layers[: extractor.layers.index(deepest) + 1]
        # hooked taps need no tracing (seconds a backbone); a traced graph only where hooks cannot reach
        tapped = HookedTaps(extractor, config.layers) if tap_times is not None else extractor.tapped(prefix)
        trunk = PooledLayers(tapped, config, extractor.tokens)
        parameters, size = network_size(prefix_modules(extractor.model, extractor.taps[deepest]))
        return InferenceParts(
            trunk,
            deepest,  # the taps cost what running up to the deepest one costs; pooling is noise
            lambda features: model.predict_proba(features.cpu().numpy()),
            parameters + fitted_numbers(model),
            size + fitted_bytes(model),
            tap_times=tap_times,
            measured_ms=extractor.extraction_ms(),
        )

    def onnx_graph(self, model: Any) -> Any:
        """Taps, pooling and selection (exported from torch) chained into the pipeline (exported by skl2onnx)."""
        extractor = model.extractor
        layers = PooledLayers(extractor.tapped(model.config.layers), model.config, extractor.tokens)
        features = module_to_onnx(FromPixels(layers, extractor.mean, extractor.std), model.image_size, output=FEATURES)
        width = int(model.pipeline.n_features_in_)
        pipeline = pipeline_to_onnx(model.pipeline, width, input_name=FEATURES, opset=OPSET)
        return chain(features, pipeline, (FEATURES, FEATURES), prefix="pipeline_")

    def approach(self, config: dict[str, Any]) -> str:
        names = {"rf": "random forest", "svm": "SVM", "logreg": "logistic regression", "sgd": "SGD logistic regression"}
        layers = len(config["layers"])
        return f"{names.get(config['classifier'], config['classifier'])} on {layers} frozen layer{'s' if layers > 1 else ''}"

    def describe(self, params: dict[str, Any]) -> list[tuple[str, Any]]:
        """The backbone when searched, the layers tapped, then the classifier and its settings."""
        params = plain_params(params)
        layers = [k.removeprefix("feat_use_") for k, v in params.items() if k.startswith("feat_use_") and v]
        searched = [(BACKBONE_PARAM, params[BACKBONE_PARAM])] if BACKBONE_PARAM in params else []
        return searched + [("layers", "+".join(layers))] + [(k, v) for k, v in params.items() if k in PIPELINE_PARAMS]
