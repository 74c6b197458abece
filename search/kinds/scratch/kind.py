"""The scratch kind: a small CNN searched and trained from random weights, the baseline transfer must beat.

Each trial builds its network from its config (search.models.scratch) and trains every block and
the head with the finetune trainer; its stages are a backbone, so --from-trial can reuse it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.data.dataset import decode_source
from search.data.sizing import MIN_IMAGE_SIZE
from search.data.sources import ImageSource
from search.kinds.base import KindInputs, ModelInputs, Prepared
from search.kinds.finetune.kind import FinetuneModel, NetworkKind, finetuned_parts, network_of
from search.kinds.finetune.trainer import train_finetune
from search.kinds.registry import register_kind
from search.kinds.weights_file import read_weights, write_weights
from search.models.backbones import SIGNED_UNIT, Backbone
from search.models.scratch import SCRATCH_NAME, ConvBlocks, scratch_backbone
from search.training.configs import ScratchConfig, config_from_dict
from search.training.core import Reporter, TrainSettings, TrialResult

CPU_MAX_SIZE = 64  # on a CPU a scratch study sees small images (32-64 px); the users' CNNs were sized for 32
GPU_MAX_SIZE = 224  # on a GPU, photos at up to the usual full size
REFERENCE = ConvBlocks(channels=(32, 64, 128), convs_per_block=1, kernel_size=3, batchnorm=True, pool="max")
KEY_PARAMS = ("blocks", "channels_first", "convs_per_block", "head_pool", "fc_layers", "optimizer", "batch_size")


@register_kind
class ScratchKind(NetworkKind):
    """Decoded images in memory; a network built and trained from random weights per trial."""

    name = "scratch"
    config_type = ScratchConfig

    def own_network(self, config: Any) -> Backbone:
        return scratch_backbone(config.architecture)  # config: the trial's ScratchConfig

    def _parts(self, config: ScratchConfig, state: dict[str, torch.Tensor] | None, num_classes: int) -> tuple[Any, Any]:
        """The trial's blocks and head, with its trained weights when `state` is given."""
        return finetuned_parts(self.own_network(config), config.as_finetune(), state, num_classes)

    def network_parts(self, config: Any, backbone: Backbone, num_classes: int) -> tuple[Any, Any]:
        return self._parts(config, None, num_classes)

    def study_backbone(self, name: str, *, pretrained: str, weights_file: Path | None) -> Backbone:
        """The users' own small CNN: what a scratch study records as its preprocessing (each trial builds its own)."""
        return scratch_backbone(REFERENCE)

    def input_size(
        self, *, native: int, backbone: Backbone, pretrained: bool, images: int, device: torch.device
    ) -> int:
        """The data's own size in multiples of 32, between 32 and 64 px on a CPU (224 on a GPU)."""
        largest = CPU_MAX_SIZE if device.type == "cpu" else GPU_MAX_SIZE
        return min(largest, max(MIN_IMAGE_SIZE, -(-native // 32) * 32))

    def prepare(self, source: ImageSource, inputs: KindInputs) -> Prepared:
        return Prepared(
            data=decode_source(source, image_size=inputs.image_size, cache_dir=inputs.cache_dir), shared=None
        )

    def train(
        self, config: Any, prepared: Prepared, backbone: Backbone, reporter: Reporter, settings: TrainSettings
    ) -> TrialResult:
        torch.manual_seed(settings.seed)  # the trial's initial weights, as reproducible as the rest
        network = self.own_network(config)
        network.stages.to(settings.device)
        return train_finetune(config.as_finetune(), prepared.data, network, reporter, settings)

    def trained_model(self, config: Any, parts: Any, inputs: ModelInputs) -> FinetuneModel:
        config = config_from_dict(ScratchConfig, config)
        stages, head = self._parts(config, parts, len(inputs.class_names))
        return FinetuneModel(
            network_of(stages, head),
            config,
            SCRATCH_NAME,
            inputs.class_names,
            inputs.image_size,
            SIGNED_UNIT,
            SIGNED_UNIT,
            inputs.device,
            kind=self.name,
        )

    def trained_stages(
        self, config: dict[str, Any], model: Any, backbone: Backbone | None, num_classes: int
    ) -> tuple[OrderedDict[str, nn.Module], tuple[str, ...]]:
        stages, _ = self.kept_parts(config, model, backbone, num_classes)
        return stages, tuple(stages)

    def write_bundle(self, model: Any, folder: Path) -> dict[str, Any]:
        write_weights(model.network, folder)
        return {"config": asdict(model.config), "mean": list(model.mean), "std": list(model.std)}

    def read_bundle(self, record: dict[str, Any], folder: Path, device: torch.device) -> FinetuneModel:
        config = config_from_dict(ScratchConfig, record["config"])
        class_names = tuple(record["class_names"])
        network = network_of(*self._parts(config, None, len(class_names)))
        read_weights(network, folder)
        mean, std = tuple(record["mean"]), tuple(record["std"])
        size = int(record["image_size"])
        return FinetuneModel(network, config, SCRATCH_NAME, class_names, size, mean, std, device, kind=self.name)

    def describe(self, params: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(k, params[k]) for k in KEY_PARAMS if k in params] or list(params.items())  # a user's own space: all
