"""Classification heads put on a backbone's cut: the part of a fine-tuned model every trial trains."""

from __future__ import annotations

from torch import nn

FLATTEN_GRID = 4  # "flatten" pools to 4x4 first: Keras' Flatten of a 32 px CNN's maps, at any input size


def pooled_grid(pool: str) -> int:
    """The side of the grid a head pools the cut's maps to before its first linear layer."""
    return FLATTEN_GRID if pool == "flatten" else 1


def build_head(
    in_channels: int,
    num_classes: int,
    *,
    depth: int,
    width: int,
    batchnorm: bool,
    dropout: float,
    pool: str = "avg",
) -> nn.Sequential:
    """Global average pool (or a flattened 4x4 grid), then `depth` x ([BN] Linear ReLU Dropout), then the classifier.

    With no hidden layer the head is the standard linear probe: dropout, then the classifier.
    """
    grid = pooled_grid(pool)
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(grid), nn.Flatten()]
    features = in_channels * grid * grid
    for _ in range(depth):
        if batchnorm:
            layers.append(nn.BatchNorm1d(features))
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        features = width
    if depth == 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def hidden_part(head: nn.Sequential) -> nn.Sequential:
    """The head without its classifier: pooled features and hidden layers, what a features study taps."""
    return head[:-1]
