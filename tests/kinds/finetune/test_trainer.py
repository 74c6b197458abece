"""The fine-tuning trainer as a plain function: learning, pruning, divergence, shared frozen stages."""

from __future__ import annotations

import dataclasses
import itertools
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from search.data.dataset import Dataset
from search.data.sources import TRAIN, VAL
from search.kinds.finetune.trainer import (
    _Network,
    _probe,
    _train_epoch,
    head_for,
    parameter_groups,
    train_finetune,
    warmup_cosine,
)
from search.models.backbones import Backbone
from search.models.prefix_cache import FrozenPrefixCache
from search.training.core import EpochMetrics, NullReporter, Status, TrainSettings
from tests.helpers import head_config

SETTINGS = TrainSettings(max_epochs=4, patience=3, device=torch.device("cpu"), seed=0)
HEAD_ONLY = head_config(
    cut="block5",
    head_width=128,
    head_depth=1,
    head_batchnorm=True,
    head_dropout=0.1,
    weight_decay=1e-4,
    lr=3e-3,
    batch_size=32,
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
    assert result.status is Status.COMPLETE
    assert [m.epoch for m in reporter.seen] == [1, 2, 3, 4]
    assert result.best is not None and result.best.val_accuracy > 0.6
    assert result.best.val_loss == min(m.val_loss for m in result.history)
    assert 0 < result.trainable_params < result.total_params


def test_reporter_stop_prunes_the_trial(small_digits: Dataset, backbone: Backbone) -> None:
    result = train_finetune(HEAD_ONLY, small_digits, backbone, StopAt(epoch=2), SETTINGS)
    assert result.status is Status.PRUNED
    assert len(result.history) == 2


def test_exploding_loss_ends_the_trial_as_diverged(small_digits: Dataset, backbone: Backbone) -> None:
    config = dataclasses.replace(HEAD_ONLY, optimizer="sgd", lr=1e30, momentum=0.9, head_batchnorm=False)
    result = train_finetune(config, small_digits, backbone, NullReporter(), SETTINGS)
    assert result.status is Status.DIVERGED
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
    pooled = {(backbone.stage_index(cut) + 1, 1) for cut in backbone.cut_points}
    assert set(cache.held()) == pooled  # every cut's output, pooled as heads pool it, in one pass; reused after
    unfrozen = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=2, backbone_lr_factor=0.5, head_only_epochs=0)
    result = train_finetune(unfrozen, small_digits, backbone, NullReporter(), settings, cache=cache)
    assert set(cache.held()) == pooled | {(4, None)}  # a shorter frozen prefix is a new entry
    train_finetune(
        dataclasses.replace(HEAD_ONLY, augment="light"), small_digits, backbone, NullReporter(), settings, cache=cache
    )
    assert set(cache.held()) == pooled | {(4, None)}  # augmented training runs the prefix afresh; validation reuses
    assert result.model is not None and any(k.startswith("trunk.") for k in result.model)
    after = backbone.stages.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_deeper_prefix_starts_from_a_shorter_one_already_cached(small_digits: Dataset, backbone: Backbone) -> None:
    cache = FrozenPrefixCache(backbone, small_digits, SETTINGS.device)
    shorter = cache.get(3)
    assert shorter is not None
    calls = []
    hook = backbone.stages[backbone.stage_names[0]].register_forward_hook(lambda *_: calls.append(1))
    try:
        deeper = cache.get(5)
    finally:
        hook.remove()
    assert len(calls) == 1, "the first stage ran once, on the one-image probe of the new entry's size"
    direct = FrozenPrefixCache(backbone, small_digits, SETTINGS.device).get(5)
    assert deeper is not None and direct is not None
    torch.testing.assert_close(deeper, direct)


def test_lp_ft_probe_fits_the_head_on_cached_features_and_leaves_the_trunk_alone(
    small_digits: Dataset, backbone: Backbone
) -> None:
    staged = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=1, head_only_epochs=3, augment="light")
    cache = FrozenPrefixCache(backbone, small_digits, SETTINGS.device)
    net = _Network(staged, small_digits, backbone, cache, SETTINGS)
    head_before = {k: v.clone() for k, v in net.head.state_dict().items()}
    trunk_before = {k: v.clone() for k, v in net.trunk.state_dict().items()}
    index = torch.from_numpy((small_digits.split == TRAIN).nonzero()[0])
    _probe(net, staged, index, torch.Generator().manual_seed(0), nullcontext(), epochs=3, steps=4)
    assert (6, 1) in cache.held()  # the pooled output of every stage up to the cut: no augmentation in the probe
    assert not all(torch.equal(head_before[k], v) for k, v in net.head.state_dict().items())
    assert all(torch.equal(trunk_before[k], v) for k, v in net.trunk.state_dict().items())


def test_lp_ft_starts_fine_tuning_from_a_fitted_head(small_digits: Dataset, backbone: Backbone) -> None:
    joint = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=1, backbone_lr_factor=0.5)
    staged = dataclasses.replace(joint, head_only_epochs=5)
    first_epoch = [
        train_finetune(config, small_digits, backbone, StopAt(epoch=1), SETTINGS).history[0]
        for config in (joint, staged)
    ]
    assert first_epoch[1].val_loss < first_epoch[0].val_loss


@pytest.mark.parametrize("train_bn", [False, True])
def test_unfrozen_batch_norm_keeps_its_statistics_unless_asked(
    small_digits: Dataset, backbone: Backbone, train_bn: bool
) -> None:
    config = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=2, train_bn=train_bn)
    net = _Network(config, small_digits, backbone, FrozenPrefixCache(backbone, small_digits, SETTINGS.device), SETTINGS)

    def statistics() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in net.trunk.state_dict().items() if "running_" in k}

    before = statistics()
    assert before  # the unfrozen stages hold batch norm layers
    scales = [m.weight for m in net.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    scales_before = [w.detach().clone() for w in scales]
    optimizer = torch.optim.Adam(net.trunk.parameters(), lr=1e-3)
    index = torch.from_numpy((small_digits.split == TRAIN).nonzero()[0])
    _train_epoch(net, optimizer, warmup_cosine(optimizer, 10), index, config, torch.Generator(), nullcontext())
    kept = [torch.equal(before[k], v) for k, v in statistics().items()]
    assert not any(kept) if train_bn else all(kept)
    # the scales train either way: only the running statistics are kept
    assert not any(torch.equal(a, b) for a, b in zip(scales_before, scales, strict=True))


def test_warmup_then_cosine_decay() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1)  # warm-up starts low
    assert max(rates) == pytest.approx(1.0) and rates.index(max(rates)) == 10  # peak after 10% of the steps
    assert rates[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(rates[10:]))  # then decays


def test_layer_decay_lowers_the_rate_of_each_stage_further_from_the_cut(backbone: Backbone) -> None:
    config = dataclasses.replace(HEAD_ONLY, lr=1e-2, unfreeze_blocks=3, backbone_lr_factor=0.5, layer_decay=0.5)
    trunk = backbone.stage_range(2, 5)
    for parameter in trunk.parameters():
        parameter.requires_grad_(True)
    try:
        rates = [group["lr"] for group in parameter_groups(config, torch.nn.Linear(2, 2), trunk)]
    finally:
        for parameter in trunk.parameters():
            parameter.requires_grad_(False)
    assert rates == pytest.approx([1e-2, 5e-3, 2.5e-3, 1.25e-3])  # head, then the stages back from the cut


def test_label_smoothing_leaves_the_validation_loss_plain(small_digits: Dataset, backbone: Backbone) -> None:
    settings = dataclasses.replace(SETTINGS, max_epochs=1)
    smoothed = dataclasses.replace(HEAD_ONLY, label_smoothing=0.2)
    result = train_finetune(smoothed, small_digits, backbone, NullReporter(), settings)
    assert result.best is not None and result.val_probabilities is not None
    labels = small_digits.labels[torch.from_numpy(small_digits.split == VAL)].numpy()
    plain = -np.log(result.val_probabilities[np.arange(len(labels)), labels]).mean()
    # validation is scored against the hard labels: losses stay comparable across trials of any smoothing
    assert result.best.val_loss == pytest.approx(plain, rel=1e-4)
    assert result.best.train_loss > 0.2  # the smoothed target's loss has a floor well above zero


def test_a_linear_head_has_no_hidden_layer() -> None:
    head = head_for(dataclasses.replace(HEAD_ONLY, head_depth=0, head_dropout=0.2), 320, 5)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and (linears[0].in_features, linears[0].out_features) == (320, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_trains_on_cuda_with_bfloat16_autocast(small_digits: Dataset) -> None:
    from search.models.backbones import create_backbone

    gpu_backbone = create_backbone("efficientnet_lite0")
    gpu_backbone.stages.to("cuda")
    settings = dataclasses.replace(SETTINGS, device=torch.device("cuda"))
    config = dataclasses.replace(HEAD_ONLY, unfreeze_blocks=2, backbone_lr_factor=0.3, augment="light")
    result = train_finetune(config, small_digits, gpu_backbone, NullReporter(), settings)
    assert result.status is Status.COMPLETE
    assert result.best is not None and result.best.val_accuracy > 0.6
    assert isinstance(settings.autocast(), torch.autocast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_cuda_out_of_memory_fails_the_trial_with_its_reason(digits: Dataset) -> None:
    from search.models.backbones import create_backbone

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
    assert result.status is Status.OUT_OF_MEMORY
    assert "CUDA out of memory" in result.reason


@pytest.mark.parametrize("pool", ["avg", "flatten"])
def test_a_frozen_head_reads_the_pooled_cache_and_learns_what_it_would_on_the_full_maps(
    small_digits: Dataset, backbone: Backbone, pool: str
) -> None:
    """Pooled entries are a few kilobytes an image at any size; the head's own pooling of them changes nothing."""
    config = dataclasses.replace(HEAD_ONLY, head_pool=pool)
    settings = dataclasses.replace(SETTINGS, max_epochs=2)
    pooled = train_finetune(config, small_digits, backbone, NullReporter(), settings)
    full = train_finetune(
        config,
        small_digits,
        backbone,
        NullReporter(),
        settings,
        cache=FrozenPrefixCache(backbone, small_digits, SETTINGS.device, budget_bytes=0),  # the maps, every batch
    )
    assert [round(m.val_loss, 4) for m in pooled.history] == [round(m.val_loss, 4) for m in full.history]


def test_a_trial_past_the_deadline_ends_at_its_best_epoch_as_complete(
    small_digits: Dataset, backbone: Backbone
) -> None:
    settings = dataclasses.replace(SETTINGS, deadline=0.0)  # long past
    result = train_finetune(HEAD_ONLY, small_digits, backbone, NullReporter(), settings)
    assert result.status is Status.COMPLETE and len(result.history) == 1
    assert result.model is not None and "time budget" in result.reason


def test_prefixes_on_the_way_are_kept_so_deeper_ones_start_from_them(small_digits: Dataset, backbone: Backbone) -> None:
    cache = FrozenPrefixCache(backbone, small_digits, SETTINGS.device)
    cache.keep_on_the_way({4})
    assert cache.get(6, grid=1) is not None
    cuts = {(backbone.stage_index(cut) + 1, 1) for cut in backbone.cut_points}
    assert set(cache.held()) == cuts | {(4, None)}, "one pass pooled every cut point and kept the waypoint"
    calls = []
    hook = backbone.stages[backbone.stage_names[0]].register_forward_hook(lambda *_: calls.append(1))
    try:
        assert cache.get(5) is not None  # from the kept waypoint, not the pixels
    finally:
        hook.remove()
    assert len(calls) == 1, "the first stage ran once, on the one-image probe of the new entry's size"
