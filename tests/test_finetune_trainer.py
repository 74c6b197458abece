"""The fine-tuning trainer as a plain function: learning, pruning, divergence, shared frozen stages."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from search.backbones import Backbone
from search.configs import FinetuneConfig
from search.dataset import Dataset
from search.finetune_trainer import train_finetune
from search.prefix_cache import FrozenPrefixCache
from search.training import EpochMetrics, NullReporter, TrainSettings

SETTINGS = TrainSettings(max_epochs=4, patience=3, device=torch.device("cpu"), seed=0)
HEAD_ONLY = FinetuneConfig(
    cut="block5",
    head_width=128,
    head_depth=1,
    head_batchnorm=True,
    head_dropout=0.1,
    weight_decay=1e-4,
    optimizer="adam",
    lr=3e-3,
    momentum=0.0,
    batch_size=32,
    unfreeze_blocks=0,
    backbone_lr_factor=1.0,
    head_only_epochs=0,
    augment="none",
)


class StopAt:
    """A reporter that records what it is told and stops the trial at a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[EpochMetrics] = []

    def report(self, epoch: int, metrics: EpochMetrics) -> bool:
        self.seen.append(metrics)
        return epoch >= self.epoch


def test_head_only_training_learns_digits_and_returns_the_best_epoch(small_digits: Dataset, backbone: Backbone) -> None:
    reporter = StopAt(epoch=99)
    result = train_finetune(HEAD_ONLY, small_digits, backbone, reporter, SETTINGS)
    assert result.status == "complete"
    assert [m.epoch for m in reporter.seen] == [1, 2, 3, 4]
    assert result.best is not None and result.best.val_accuracy > 0.6
    assert result.best.val_loss == min(m.val_loss for m in result.history)
    assert 0 < result.trainable_params < result.total_params


def test_reporter_stop_prunes_the_trial(small_digits: Dataset, backbone: Backbone) -> None:
    result = train_finetune(HEAD_ONLY, small_digits, backbone, StopAt(epoch=2), SETTINGS)
    assert result.status == "pruned"
    assert len(result.history) == 2


def test_exploding_loss_ends_the_trial_as_diverged(small_digits: Dataset, backbone: Backbone) -> None:
    config = dataclasses.replace(HEAD_ONLY, optimizer="sgd", lr=1e30, momentum=0.9, head_batchnorm=False)
    result = train_finetune(config, small_digits, backbone, NullReporter(), SETTINGS)
    assert result.status == "diverged"
    assert "loss became" in result.reason


def test_frozen_prefix_is_computed_once_and_shared_weights_never_change(
    small_digits: Dataset, backbone: Backbone
) -> None:
    cache = FrozenPrefixCache(backbone, small_digits, SETTINGS.device)
    before = {k: v.clone() for k, v in backbone.stages.state_dict().items()}
    settings = dataclasses.replace(SETTINGS, max_epochs=1)
    train_finetune(HEAD_ONLY, small_digits, backbone, NullReporter(), settings, cache=cache)
    train_finetune(
        dataclasses.replace(HEAD_ONLY, head_width=64), small_digits, backbone, NullReporter(), settings, cache=cache
    )
    assert cache.extractions == 1  # the second head-only trial reused the first one's activations
    unfrozen = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=2, backbone_lr_factor=0.5, head_only_epochs=0)
    result = train_finetune(unfrozen, small_digits, backbone, NullReporter(), settings, cache=cache)
    assert cache.extractions == 2  # a shorter frozen prefix is a new entry
    train_finetune(
        dataclasses.replace(HEAD_ONLY, augment="light"), small_digits, backbone, NullReporter(), settings, cache=cache
    )
    assert cache.extractions == 2  # augmented training runs the prefix afresh; validation reuses the entry
    assert result.best_state is not None and any(k.startswith("trunk.") for k in result.best_state)
    after = backbone.stages.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_staged_unfreezing_keeps_the_trunk_still_during_head_only_epochs(
    small_digits: Dataset, backbone: Backbone
) -> None:
    staged = dataclasses.replace(
        HEAD_ONLY, unfreeze_blocks=1, backbone_lr_factor=0.5, head_only_epochs=1, optimizer="sgd", lr=0.01, momentum=0.9
    )
    first = train_finetune(staged, small_digits, backbone, StopAt(epoch=1), SETTINGS)
    assert first.best_state is not None
    stage = backbone.stages["block5"].state_dict()
    trunk = {k.removeprefix("trunk.0."): v for k, v in first.best_state.items() if k.startswith("trunk.0.")}
    weights = [k for k in stage if k.endswith("weight")]
    assert all(torch.equal(stage[k], trunk[k]) for k in weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_trains_on_cuda_with_bfloat16_autocast(small_digits: Dataset) -> None:
    from search.backbones import create_backbone

    gpu_backbone = create_backbone("efficientnet_lite0")
    gpu_backbone.stages.to("cuda")
    settings = dataclasses.replace(SETTINGS, device=torch.device("cuda"))
    config = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=2, backbone_lr_factor=0.3, augment="light")
    result = train_finetune(config, small_digits, gpu_backbone, NullReporter(), settings)
    assert result.status == "complete"
    assert result.best is not None and result.best.val_accuracy > 0.6
    assert isinstance(settings.autocast(), torch.autocast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_cuda_out_of_memory_fails_the_trial_with_its_reason(digits: Dataset) -> None:
    from search.backbones import create_backbone

    gpu_backbone = create_backbone("efficientnet_lite0")
    gpu_backbone.stages.to("cuda")
    settings = dataclasses.replace(SETTINGS, device=torch.device("cuda"), max_epochs=1)
    config = dataclasses.replace(HEAD_ONLY, cut="conv_head", unfreeze_blocks=9, batch_size=256, augment="light")
    big = dataclasses.replace(
        digits, images=torch.nn.functional.interpolate(digits.images.float(), size=448).to(torch.uint8)
    )
    torch.cuda.set_per_process_memory_fraction(0.02)  # ~1.6 GB of an 80 GB card: too little for this trial
    try:
        result = train_finetune(
            config,
            big,
            gpu_backbone,
            NullReporter(),
            settings,
            cache=FrozenPrefixCache(gpu_backbone, big, settings.device, budget_bytes=0),
        )
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert result.status == "out_of_memory"
    assert "CUDA out of memory" in result.reason
