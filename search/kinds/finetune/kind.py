"""The finetune kind: a head on a backbone's cut, the last stages trained with it, on decoded images."""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search.data.dataset import decode_source
from search.data.pixels import normalize_pixels
from search.data.sources import TEST, ImageSource
from search.kinds.base import (
    InferenceParts,
    KindInputs,
    ModelInputs,
    Part,
    Prepared,
    SourceTrial,
    StudyKind,
    network_size,
    stands_on_backbone,
)
from search.kinds.finetune.trainer import head_for, train_finetune, trained_span
from search.kinds.registry import register_kind
from search.kinds.transfer import source_from_record, source_record, transferred_backbone
from search.kinds.weights_file import read_weights, write_weights
from search.models.backbones import Backbone, create_backbone, freeze
from search.models.heads import hidden_part
from search.models.onnx_graphs import PROBABILITIES, FromPixels, module_to_onnx
from search.models.prefix_cache import FrozenPrefixCache
from search.training.configs import FinetuneConfig, ScratchConfig, config_from_dict, plain_params
from search.training.core import Reporter, TrainSettings, TrialResult
from search.training.stage_costs import StageCosts, measure_stage_costs
from search.training.words import finetune_method

PREDICT_BATCH = 128
# a space's parameters named as FinetuneConfig's fields (the shipped space's are), and its two switches
CONFIG_VOCABULARY = {f.name for f in fields(FinetuneConfig)} | {"lr", "backbone", "unfreeze_staged"}
KEY_PARAMS = (
    "backbone",
    "cut",
    "reinit_blocks",
    "unfreeze_blocks",
    "optimizer",
    "lr",
    "batch_size",
    "augment",
)


def finetuned_parts(
    backbone: Backbone, config: FinetuneConfig, state: dict[str, torch.Tensor] | None, num_classes: int
) -> tuple[OrderedDict[str, nn.Module], nn.Sequential]:
    """The stages up to the cut with the trial's trained ones loaded (copies), and its head (untrained: state None)."""
    frozen, cut = trained_span(backbone, config)
    stages = OrderedDict((name, copy.deepcopy(backbone.stages[name])) for name in backbone.stage_names[:cut])
    head = head_for(config, backbone.channels_at(config.cut), num_classes)
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
    parts["head"] = hidden_part(head)  # pooled, hidden layers; the classifier itself is not a feature
    model = nn.Sequential(parts)
    freeze(model)
    return model, {name: name for name in parts}


@dataclass
class FinetuneModel:
    """A fine-tuned network: the stages up to the cut and the trained head."""

    network: nn.Sequential
    config: FinetuneConfig | ScratchConfig  # what rebuilds it from a bundle
    backbone: str
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    kind: str = "finetune"
    source: dict[str, Any] | None = None  # the trial whose network it was trained on (transferred), for bundles

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        self.network.to(self.device).eval()
        chunks = [
            self.network(normalize_pixels(batch.to(self.device), self.mean, self.std)).float().softmax(1).cpu().numpy()
            for batch in images.split(PREDICT_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), np.float32)


def network_of(stages: OrderedDict[str, nn.Module], head: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(OrderedDict([*stages.items(), ("head", head)]))


class NetworkKind(StudyKind):
    """What the kinds that train a network share: decoded images held (test split too), a network to reuse."""

    def test_images(self, prepared: Prepared) -> Part | None:
        return prepared.data.part(TEST)

    @abstractmethod
    def network_parts(
        self, config: Any, backbone: Backbone, num_classes: int
    ) -> tuple[OrderedDict[str, nn.Module], nn.Sequential]:
        """A trial's stages and head, shape only (untrained)."""

    def kept_parts(
        self, config: dict[str, Any], model: FinetuneModel | None, backbone: Backbone | None, num_classes: int
    ) -> tuple[OrderedDict[str, nn.Module], nn.Sequential]:
        """A kept model's stages and head (copies: another study trains or taps them), or the untrained shape."""
        if model is None:
            assert backbone is not None or not stands_on_backbone(self), "a finetune trial stood on a backbone"
            return self.network_parts(self.config_of(config), backbone, num_classes)  # type: ignore[arg-type]
        parts = OrderedDict((name, copy.deepcopy(module)) for name, module in model.network.named_children())
        head = parts.pop("head")
        assert isinstance(head, nn.Sequential), "network_of puts the head last"
        return parts, head

    def tap_model(
        self, config: dict[str, Any], model: Any, backbone: Backbone | None, num_classes: int
    ) -> tuple[nn.Sequential, dict[str, str]]:
        return finetuned_tap_model(*self.kept_parts(config, model, backbone, num_classes))

    def trunk_key(self, config: Any, backbone: Backbone) -> Hashable | None:
        """What makes two trials' stages cost the same; None: each trial's stages are its own."""
        return None

    def inference_parts(self, config: Any, model: Any, prepared: Prepared, backbone: Backbone) -> InferenceParts:
        """The stages and the head (weights do not change the cost: the untrained shapes serve)."""
        stages, head = self.network_parts(config, backbone, prepared.data.num_classes)
        head.eval()  # batch norm in training mode cannot take a batch of one
        parameters, size = network_size(network_of(stages, head))
        trunk = nn.Sequential(stages)
        return InferenceParts(trunk, self.trunk_key(config, backbone), lambda x: head(x).softmax(1), parameters, size)

    def onnx_graph(self, model: Any) -> Any:
        """The network with its pixel normalisation in front and a softmax behind: what predict_proba computes."""
        network = nn.Sequential(FromPixels(model.network, model.mean, model.std), nn.Softmax(dim=1))
        return module_to_onnx(network, model.image_size, output=PROBABILITIES)


@register_kind
class FinetuneKind(NetworkKind):
    """Decoded images in memory, frozen-prefix activations cached, a network trained per trial."""

    name = "finetune"
    config_type = FinetuneConfig

    def network_parts(
        self, config: Any, backbone: Backbone, num_classes: int
    ) -> tuple[OrderedDict[str, nn.Module], nn.Sequential]:
        return finetuned_parts(backbone, config, None, num_classes)

    def trunk_key(self, config: Any, backbone: Backbone) -> Hashable | None:
        return (backbone.name, config.cut)  # the stages up to the cut; unfreezing changes weights, not cost

    def prepare(self, source: ImageSource, inputs: KindInputs) -> Prepared:
        data = decode_source(source, image_size=inputs.image_size, cache_dir=inputs.cache_dir)
        return Prepared(data=data, shared=FrozenPrefixCache(inputs.backbone, data, inputs.device))

    def prepare_another(self, prepared: Prepared, source: ImageSource, inputs: KindInputs) -> Prepared:
        """The decoded images once for every backbone; each has its own frozen-prefix cache."""
        return replace(prepared, shared=FrozenPrefixCache(inputs.backbone, prepared.data, inputs.device))

    def approach(self, config: dict[str, Any]) -> str:
        return finetune_method(config_from_dict(FinetuneConfig, config))

    def stage_costs(self, prepared: Prepared, backbone: Backbone, device: torch.device) -> StageCosts | None:
        return measure_stage_costs(backbone, prepared.data.images, device)

    def train(
        self, config: Any, prepared: Prepared, backbone: Backbone, reporter: Reporter, settings: TrainSettings
    ) -> TrialResult:
        return train_finetune(config, prepared.data, backbone, reporter, settings, cache=prepared.shared)

    def trained_model(self, config: Any, parts: Any, inputs: ModelInputs) -> FinetuneModel:
        config = config_from_dict(FinetuneConfig, config)
        backbone = inputs.backbone
        stages, head = finetuned_parts(backbone, config, parts, len(inputs.class_names))
        return FinetuneModel(
            network_of(stages, head),
            config,
            backbone.name,
            inputs.class_names,
            inputs.image_size,
            backbone.mean,
            backbone.std,
            inputs.device,
            kind=self.name,
            source=source_record(inputs.source) if inputs.source else None,
        )

    def source_backbone(self, source: SourceTrial, base: Backbone) -> Backbone:
        return transferred_backbone(source, base)  # base: the study's backbone, the one the source stood on

    def trained_stages(
        self, config: dict[str, Any], model: Any, backbone: Backbone | None, num_classes: int
    ) -> tuple[OrderedDict[str, nn.Module], tuple[str, ...]]:
        assert backbone is not None, "a finetune trial is rebuilt on the backbone it stood on"
        stages, _ = self.kept_parts(config, model, backbone, num_classes)
        return stages, tuple(c for c in backbone.cut_points if c in stages)

    def write_bundle(self, model: Any, folder: Path) -> dict[str, Any]:
        write_weights(model.network, folder)
        return {
            "backbone": model.backbone,
            "config": asdict(model.config),
            "mean": list(model.mean),
            "std": list(model.std),
            "source": model.source,
        }

    def read_bundle(self, record: dict[str, Any], folder: Path, device: torch.device) -> FinetuneModel:
        source = record.get("source")
        if source:  # transferred: the source trial's stages, shape only (the bundle's weights replace all of it)
            backbone = transferred_backbone(source_from_record(source))
        else:
            backbone = create_backbone(record["backbone"], pretrained="none")
        class_names = tuple(record["class_names"])
        config = config_from_dict(FinetuneConfig, record["config"])
        network = network_of(*finetuned_parts(backbone, config, None, len(class_names)))
        read_weights(network, folder)
        mean, std = tuple(record["mean"]), tuple(record["std"])
        return FinetuneModel(
            network, config, backbone.name, class_names, int(record["image_size"]), mean, std, device, source=source
        )

    def describe(self, params: dict[str, Any]) -> list[tuple[str, Any]]:
        params = plain_params(params)
        if not set(params) <= CONFIG_VOCABULARY:  # a user's own space, in its own words: all of them
            return list(params.items())
        return [(k, params[k]) for k in KEY_PARAMS if k in params]
