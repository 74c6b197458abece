"""What a study's trials may cost: each stage timed once on this machine, and the space offered what fits.

A frozen head costs one pass of the images through the backbone, shared by every trial, and then
seconds; trials that train stages pay for them every epoch, and with augmentation the frozen stages
too (augmented images cannot be cached). How much of that a trial may spend is the allowance: a few
passes of the whole network over the data, at least TRIAL_FLOOR_S, less when --time-budget asks for
less. The planner offers, per cut point, the unfreezing depths and augmentation whose estimated
cost at --max-epochs fits the allowance, so a slow device searches cheaper trials at full resolution
instead of every trial at a shrunken one (bench/bench_defaults.py measures the trade).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.kinds import Prepared, StudyKind
from search.kinds.finetune.trainer import trained_span
from search.models.backbones import Backbone
from search.models.prefix_cache import FrozenPrefixCache
from search.study.record import read_stage_costs, write_stage_costs
from search.training.configs import SpaceContext
from search.training.stage_costs import StageCosts, Workload, trial_seconds

TRIAL_FLOOR_S = 180.0  # a trial may always cost this much: small sets keep augmented fine-tuning (bench/RESULTS.md)
TRIAL_PASSES = 5.0  # ... or this many passes of the whole network over every image, for big sets
BUDGET_TRIALS = 4  # with --time-budget, a trial may cost at most 1/4 of the time left: several fit
# On a CPU a study searches at most the last 2 stages at the coarsest resolution, however cheap: offering every
# stage spread a 20-trial flowers study over a wider space and it found less (docs/real-photos.md)
CPU_MAX_UNFREEZE = 2
SMALL_IMAGES = 64  # at or below this side (networks from scratch) a CPU may train every stage
FINISH_S = 15.0  # of a --time-budget, kept for what follows the last trial: the test evaluation and the summary


def trial_allowance(costs: StageCosts, images: int, *, budget_left: float | None) -> float:
    """Seconds one trial may cost: a few passes of the data, at least the floor; a share of the budget left."""
    allowance = max(TRIAL_FLOOR_S, TRIAL_PASSES * costs.pass_seconds(images))
    if budget_left is not None:
        allowance = min(allowance, budget_left / BUDGET_TRIALS)
    return allowance


@dataclass(frozen=True)
class TrialPlan:
    """Per cut point, how deep a trial may unfreeze, and up to which depth it may augment (-1: not at all)."""

    max_unfreeze: dict[str, int]
    augment_up_to: dict[str, int]
    allowance_s: float

    def summary(self) -> str:
        """One line on what the deepest cut point's trials may do, for the console."""
        cut = list(self.max_unfreeze)[-1]
        depth, augmented = self.max_unfreeze[cut], self.augment_up_to[cut]
        trains = f"up to {depth} stage{'s' if depth != 1 else ''} trained" if depth else "frozen heads only"
        if augmented >= depth:
            augments = "with or without augmentation"
        elif augmented > 0:
            augments = f"augmentation up to {augmented} stage{'s' if augmented != 1 else ''}"
        else:
            augments = "on cached features, without augmentation"
        return f"trials may take {self.allowance_s:.0f}s each here: at {cut}, {trains}, {augments}"


def plan_trials(
    costs: StageCosts, backbone: Backbone, work: Workload, *, allowance: float, image_size: int
) -> TrialPlan:
    """The deepest unfreezing and augmentation each cut point affords within `allowance` seconds a trial."""
    max_unfreeze, augment_up_to = {}, {}
    for cut in backbone.cut_points:
        depth = backbone.max_unfreeze(cut)
        if costs.device == "cpu" and image_size > SMALL_IMAGES:
            depth = min(depth, CPU_MAX_UNFREEZE, backbone.coarse_stages(cut))
        stop = backbone.stage_index(cut) + 1

        def fits(unfreeze: int, augment: bool, stop: int = stop) -> bool:
            cost = trial_seconds(costs, work, frozen=stop - unfreeze, stop=stop, augment=augment)
            return cost <= allowance

        max_unfreeze[cut] = max((u for u in range(depth + 1) if fits(u, False)), default=0)
        augment_up_to[cut] = max((u for u in range(max_unfreeze[cut] + 1) if fits(u, True)), default=-1)
    return TrialPlan(max_unfreeze, augment_up_to, allowance)


@dataclass(frozen=True)
class Budget:
    """--time-budget: the wall time the whole command may take, counted from its start (time.monotonic())."""

    seconds: float
    started: float

    @property
    def deadline(self) -> float:
        return self.started + self.seconds - FINISH_S

    def spent(self) -> float:
        return time.monotonic() - self.started

    def check(self, first_trials: float) -> None:
        """Refuse a budget that cannot hold the first trials after what preparing took: one line, the smallest."""
        spent = self.spent()
        smallest = spent + first_trials + FINISH_S
        if self.seconds < smallest:
            raise UserError(
                f"--time-budget {self.seconds:.0f} is too small for this study here: preparing took {spent:.0f} s "
                f"and its first trials need about {first_trials:.0f} s; give at least {smallest:.0f} (or leave it out)"
            )

    def left(self) -> float:
        """Seconds left for trials: what is kept back for the test evaluation and summary is not theirs."""
        return self.deadline - time.monotonic()


class StopBeforeOverrun:
    """Optuna callback: stop starting trials once the next one, as long as a typical one so far, would not fit."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.seconds: list[float] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            self.seconds.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        typical = statistics.median(self.seconds) if self.seconds else 0.0
        if self.budget.left() < typical:
            study.stop()


def _workload(prepared: Prepared, max_epochs: int) -> Workload:
    counts = prepared.data.split_counts()
    cache = prepared.shared
    return Workload(counts["train"], counts["val"], max_epochs, cached=lambda stages: cache.fits(stages))


def plan_study(
    study: optuna.Study,
    kind: StudyKind,
    backbone: Backbone,
    device: torch.device,
    prepared: Prepared,
    max_epochs: int,
    budget: Budget | None,
) -> tuple[TrialPlan | None, StageCosts | None]:
    """What the study's trials may cost on this device: its stages timed once (recorded on the study), then planned.

    None for kinds whose trials train no backbone stage.
    """
    costs = read_stage_costs(study, backbone.name, device.type)
    if costs is None or costs.image_size != prepared.data.image_size:
        costs = kind.stage_costs(prepared, backbone, device)
        if costs is None:
            return None, None
        write_stage_costs(study, backbone.name, costs)
    allowance = trial_allowance(costs, len(prepared.data.labels), budget_left=budget.left() if budget else None)
    image_size = prepared.data.image_size
    plan = plan_trials(costs, backbone, _workload(prepared, max_epochs), allowance=allowance, image_size=image_size)
    cache = prepared.shared
    if isinstance(cache, FrozenPrefixCache):  # each cut's shallowest planned prefix, so deeper ones start from it
        cache.keep_on_the_way({backbone.stage_index(c) + 1 - depth for c, depth in plan.max_unfreeze.items() if depth})
    return plan, costs


def first_trials_seconds(
    first: list[dict[str, Any]],
    suggest: Callable[[optuna.trial.BaseTrial, SpaceContext], Any],
    context: SpaceContext,
    costs: StageCosts,
    backbone: Backbone,
    prepared: Prepared,
    max_epochs: int,
) -> float:
    """What the space's first trials (the probe, the standard recipe) are estimated to cost together."""
    work = _workload(prepared, max_epochs)
    needed = 0.0
    for params in first:
        config = suggest(optuna.trial.FixedTrial(params), context)
        frozen, stop = trained_span(backbone, config)
        needed += trial_seconds(costs, work, frozen=frozen, stop=stop, augment=config.augment != "none")
    return needed
