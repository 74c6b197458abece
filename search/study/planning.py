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
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from search.models.backbones import Backbone
from search.training.stage_costs import StageCosts, Workload, trial_seconds

TRIAL_FLOOR_S = 120.0  # a trial may always cost this much: small sets then keep their fine-tuning choices
TRIAL_PASSES = 5.0  # ... or this many passes of the whole network over every image, for big sets
BUDGET_TRIALS = 4  # with --time-budget, a trial may cost at most this fraction of what is left: several fit
# On a CPU a study searches at most the last 2 stages at the coarsest resolution, however cheap: offering every
# stage spread a 20-trial flowers study over a wider space and it found less (README, Real photos)
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
