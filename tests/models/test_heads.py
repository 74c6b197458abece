"""Heads on a backbone's cut: the linear probe, hidden layers with batch norm, and the part a features study taps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search.models.heads import build_head, hidden_part

IN_CHANNELS, CLASSES, WIDTH = 24, 5, 16


def cut_output(batch: int = 4) -> torch.Tensor:
    """What a backbone's cut hands the head: [B, C, H, W] activations."""
    return torch.randn(batch, IN_CHANNELS, 3, 3)


def kinds(head: nn.Sequential) -> list[type[nn.Module]]:
    return [type(layer) for layer in head]


def test_depth_zero_is_pooling_dropout_and_one_linear_classifier() -> None:
    head = build_head(IN_CHANNELS, CLASSES, depth=0, width=WIDTH, batchnorm=True, dropout=0.3)
    assert kinds(head) == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Linear]  # batchnorm needs a hidden layer
    dropout, classifier = head[2], head[3]
    assert isinstance(dropout, nn.Dropout) and dropout.p == pytest.approx(0.3)
    assert isinstance(classifier, nn.Linear)
    assert (classifier.in_features, classifier.out_features) == (IN_CHANNELS, CLASSES)
    assert head.eval()(cut_output()).shape == (4, CLASSES)


def test_depth_two_with_batchnorm_orders_bn_linear_relu_dropout_per_layer() -> None:
    head = build_head(IN_CHANNELS, CLASSES, depth=2, width=WIDTH, batchnorm=True, dropout=0.25)
    hidden = [nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.Dropout]
    assert kinds(head) == [nn.AdaptiveAvgPool2d, nn.Flatten, *hidden, *hidden, nn.Linear]
    norms = [layer for layer in head if isinstance(layer, nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [IN_CHANNELS, WIDTH]  # each normalises what enters its Linear
    linears = [layer for layer in head if isinstance(layer, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [
        (IN_CHANNELS, WIDTH),
        (WIDTH, WIDTH),
        (WIDTH, CLASSES),
    ]
    assert [layer.p for layer in head if isinstance(layer, nn.Dropout)] == [0.25, 0.25]
    assert head.train()(cut_output()).shape == (4, CLASSES)
    assert head.eval()(cut_output(batch=1)).shape == (1, CLASSES)


def test_hidden_layers_without_batchnorm_have_none() -> None:
    head = build_head(IN_CHANNELS, CLASSES, depth=1, width=WIDTH, batchnorm=False, dropout=0.0)
    assert kinds(head) == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]


@pytest.mark.parametrize(("depth", "features"), [(0, IN_CHANNELS), (2, WIDTH)])
def test_hidden_part_drops_only_the_classifier(depth: int, features: int) -> None:
    head = build_head(IN_CHANNELS, CLASSES, depth=depth, width=WIDTH, batchnorm=True, dropout=0.1).eval()
    hidden = hidden_part(head)
    assert len(hidden) == len(head) - 1
    assert all(mine is theirs for mine, theirs in zip(hidden, head, strict=False))  # the same modules, not copies
    assert not any(layer is head[-1] for layer in hidden)
    x = cut_output()
    with torch.no_grad():
        tapped = hidden(x)
        assert tapped.shape == (4, features)
        torch.testing.assert_close(head[-1](tapped), head(x))  # the classifier on the tap is the whole head
