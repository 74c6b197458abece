"""Small CNNs trained from random weights, built from a config as a Backbone like any pretrained one.

A scratch network's conv blocks are its stages and every block is a cut point, so what works with a
backbone (a head on a cut, unfreezing, taps for a features study, transfer to other data) works with
a network a scratch trial trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from search.models.backbones import SIGNED_UNIT, Backbone

SCRATCH_NAME = "scratch"
SMALL_IMAGE_SIZE = 32  # what these networks are sized for (CIFAR); the study's data decides the real size


@dataclass(frozen=True)
class ConvBlocks:
    """The architecture of a scratch network's trunk (search.training.configs.ScratchConfig holds one)."""

    channels: Sequence[int]  # feature maps per block
    convs_per_block: int
    kernel_size: int
    batchnorm: bool
    pool: str  # max or avg


def conv_block(in_channels: int, out_channels: int, config: ConvBlocks) -> nn.Sequential:
    """`convs_per_block` x (conv [BN] ReLU), then a 2x2 pool that halves the maps."""
    layers: list[nn.Module] = []
    for i in range(config.convs_per_block):
        layers.append(
            nn.Conv2d(
                in_channels if i == 0 else out_channels,
                out_channels,
                config.kernel_size,
                padding=config.kernel_size // 2,
                bias=not config.batchnorm,  # batch norm's shift replaces the bias
            )
        )
        if config.batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.MaxPool2d(2) if config.pool == "max" else nn.AvgPool2d(2))
    return nn.Sequential(*layers)


def scratch_backbone(config: ConvBlocks) -> Backbone:
    """The config's conv blocks, freshly initialised (seed torch first for the same weights), as stages block1..N."""
    stages = nn.ModuleDict()
    channels = 3
    for i, width in enumerate(config.channels, start=1):
        stages[f"block{i}"] = conv_block(channels, width, config)
        channels = width
    return Backbone(
        name=SCRATCH_NAME,
        stages=stages,
        cut_points=tuple(stages.keys()),
        weights="random",
        mean=SIGNED_UNIT,  # pixels scaled to [-1, 1]: centred, which is all a network from scratch needs
        std=SIGNED_UNIT,
        native_image_size=SMALL_IMAGE_SIZE,
    )
