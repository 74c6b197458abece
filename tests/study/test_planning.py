"""Trials planned from measured stage costs: what a slow device offers, what a budget allows, and the timing itself."""

from __future__ import annotations

import torch

from search.data.dataset import Dataset
from search.models.backbones import Backbone
from search.study.planning import TRIAL_FLOOR_S, plan_trials, trial_allowance
from search.training.stage_costs import StageCosts, Workload, measure_stage_costs, trial_seconds

STAGES = ("stem", "block1", "block2", "block3", "block4", "block5", "block6", "block7", "conv_head")


def costs(scale: float, device: str = "cpu") -> StageCosts:
    """EfficientNet-Lite0's stage costs at 224 px on 2 CPU cores (ms per image), times `scale`."""
    forward = (0.39, 0.58, 2.43, 1.12, 0.79, 1.29, 1.19, 0.36, 0.23)
    train = (13.6, 4.0, 11.3, 5.2, 3.0, 5.6, 5.1, 1.05, 0.74)
    return StageCosts(STAGES, tuple(f * scale for f in forward), tuple(t * scale for t in train), device, 224)


def work(train: int, *, cached: bool = True) -> Workload:
    return Workload(train=train, val=train // 3, max_epochs=12, cached=lambda stages: cached)


def test_a_trial_costs_its_trained_stages_and_with_augmentation_the_frozen_ones_too() -> None:
    plain = trial_seconds(costs(1), work(3000), frozen=7, stop=9, augment=False)
    augmented = trial_seconds(costs(1), work(3000), frozen=7, stop=9, augment=True)
    frozen = trial_seconds(costs(1), work(3000), frozen=9, stop=9, augment=False)
    assert frozen == 0.0 < plain < augmented
    assert trial_seconds(costs(1), work(3000, cached=False), frozen=7, stop=9, augment=False) > plain


def test_a_fast_device_is_offered_everything(backbone: Backbone) -> None:
    plan = plan_trials(costs(0.001, "cuda"), backbone, work(50_000), allowance=TRIAL_FLOOR_S, image_size=224)
    assert plan.max_unfreeze == {cut: backbone.max_unfreeze(cut) for cut in backbone.cut_points}
    assert plan.augment_up_to == plan.max_unfreeze


def test_a_cpu_keeps_small_photo_sets_fine_tuned_with_augmentation(backbone: Backbone) -> None:
    few = work(340)
    plan = plan_trials(
        costs(1), backbone, few, allowance=trial_allowance(costs(1), 600, budget_left=None), image_size=224
    )
    assert plan.max_unfreeze["conv_head"] == 2 and plan.augment_up_to["conv_head"] == 2


def test_a_cpu_trains_larger_sets_on_the_cache_without_augmentation(backbone: Backbone) -> None:
    allowance = trial_allowance(costs(1), 4000, budget_left=None)
    plan = plan_trials(costs(1), backbone, work(2550), allowance=allowance, image_size=224)
    assert plan.max_unfreeze["conv_head"] >= 1 and plan.augment_up_to["conv_head"] < 1
    assert "without augmentation" in plan.summary()


def test_a_tight_budget_leaves_frozen_heads_only(backbone: Backbone) -> None:
    allowance = trial_allowance(costs(1), 4000, budget_left=40.0)
    assert allowance == 10.0
    plan = plan_trials(costs(1), backbone, work(2550), allowance=allowance, image_size=224)
    assert plan.max_unfreeze["conv_head"] == 0 and "frozen heads only" in plan.summary()


def test_stage_costs_are_measured_without_touching_the_shared_backbone(
    small_digits: Dataset, backbone: Backbone
) -> None:
    before = {k: v.clone() for k, v in backbone.stages.state_dict().items()}
    measured = measure_stage_costs(backbone, small_digits.images, torch.device("cpu"))
    assert measured.stages == backbone.stage_names and measured.image_size == small_digits.image_size
    assert all(ms > 0 for ms in measured.forward_ms + measured.train_ms)
    assert StageCosts.from_record(measured.to_record()) == measured
    after = backbone.stages.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in backbone.stages.parameters())
