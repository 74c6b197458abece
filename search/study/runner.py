"""The study runner: prepare the kind's data for each backbone (after search.study.opening), run the optimisation loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.allocator import keep_freed_memory
from search.data.dataset import SPLIT_CODES, Dataset, stratified_split
from search.data.sources import TRAIN, open_source
from search.errors import StudyAborted, UserError
from search.kinds import KindInputs, SourceTrial
from search.models.backbones import Backbone
from search.study.costs import CostMeter
from search.study.evaluation import finish_study
from search.study.objective import Resources, TrialFailed, make_objective
from search.study.opening import Opened, check_same_setup, open_spec, resolve
from search.study.planning import Budget, StopBeforeOverrun, TrialPlan, first_trials_seconds, plan_study
from search.study.record import (
    Resolved,
    StudyRecord,
    claim_split,
    write_setup,
)
from search.study.spec import StudySpec
from search.study.trial_facts import TrialFacts
from search.study.warm_start import check_sources, warm_start_trials
from search.study.workers import StopWhenCovered, rounds, tagged, worker_seed
from search.training.configs import BACKBONE_PARAM, SpaceContext
from search.training.core import TrainSettings
from spaces import Space

MAX_FAILURES_IN_A_ROW = 5  # a study whose trials all fail is misconfigured; stop instead of looping
STARTUP_TRIALS = 3  # trials the median pruner lets finish before it compares: see make_pruner
WARMUP_EPOCHS = 2  # a trial's first epoch is never judged: a warm-up schedule makes it noisy
Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class BackboneSetup:
    """What the trials on one backbone share: the space's context, the prepared data and caches, the plan."""

    context: SpaceContext
    resources: Resources
    plan: TrialPlan | None = None  # what the trials may cost (network kinds); None: not planned


@dataclass
class PreparedStudy:
    """Everything a worker process builds once before its first trial."""

    spec: StudySpec  # as asked for
    resolved: Resolved  # what the runner decided from it
    study: optuna.Study
    space: Space
    setups: dict[str, BackboneSetup]  # by backbone name: one, or each one a study searches among
    budget: Budget | None = None  # --time-budget, counted from the command's start

    @property
    def first(self) -> BackboneSetup:
        return next(iter(self.setups.values()))

    @property
    def context(self) -> SpaceContext:
        return self.first.context

    @property
    def resources(self) -> Resources:
        return self.first.resources

    @property
    def plan(self) -> TrialPlan | None:
        return self.first.plan

    @property
    def data(self) -> Dataset:
        return self.resources.prepared.data


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """TPE by default: multivariate with groups, because the spaces are conditional."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """Median by default: it needs no budget arithmetic and waits for a few finished trials.

    Three start-up trials, not Optuna's five: those run unpruned to their last epoch, and on a 20-trial
    study five of them were a quarter of all the epochs an unpruned study trains (bench/bench_pruning.py).
    """
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS)


def _check_same_data(spec: StudySpec, recorded: StudyRecord, data: Dataset) -> None:
    """Refuse to mix trials of another dataset under one study name."""
    change = recorded.data.change_to(data) if recorded.data else None
    if change is not None:
        raise UserError(
            f"study '{spec.name}' was created with other data ({change}); use another --study-name for this data"
        )


def _split(spec: StudySpec, data: Dataset, opened: Opened) -> Dataset:
    """The data with the study's split: stored, the source trial's on its own data (no leakage), or a new one."""
    stored, tapped = opened.stored, opened.tapped
    if stored is not None:
        _check_same_data(spec, stored, data)
    if stored is not None and stored.split is not None:
        return data.with_split(stored.split)
    if tapped is not None and tapped.fingerprint == data.fingerprint:
        return data.with_split(tapped.split)
    seen = _trained_on_by(tapped, data) if tapped is not None else None
    split = stratified_split(data.labels.numpy(), data.split, data.class_names, seed=spec.seed, keep_in_train=seen)
    return replace(data, split=split)


def _trained_on_by(source: SourceTrial, data: Dataset) -> np.ndarray:
    """Per item of `data`, whether the source trial trained on it: other data may share images with its own."""
    theirs = source.data
    try:
        listed = open_source(theirs["data"], root=Path(theirs["data_root"]), classes=theirs.get("classes"))
    except UserError:  # its data is gone from here: nothing to compare, so nothing is known to be shared
        return np.zeros(len(data.labels), dtype=bool)
    codes = source.split
    if len(codes) == len(listed.keys):  # every item was readable: the split lines up with the listing
        trained = {key for key, code in zip(listed.keys, codes, strict=True) if code == SPLIT_CODES[TRAIN]}
    else:  # some were unreadable there; any shared item may have been trained on
        trained = set(listed.keys)
    return np.fromiter((key in trained for key in data.keys), dtype=bool, count=len(data.keys))


def _context(
    opened: Opened, backbone: Backbone, data: Dataset, feature_layers: tuple[str, ...], plan: TrialPlan | None
) -> SpaceContext:
    stages = {cut: backbone.max_unfreeze(cut) for cut in backbone.cut_points}
    return SpaceContext(
        backbone=backbone.name,
        cut_points=backbone.cut_points,
        max_unfreeze=plan.max_unfreeze if plan else stages,
        augment_up_to=plan.augment_up_to if plan else {},
        stages=stages,
        num_classes=data.num_classes,
        train_size=data.split_counts()["train"],
        device=opened.device.type,
        feature_layers=feature_layers,
        image_size=data.image_size,
        transferred=opened.tapped is not None,
        searched=tuple(b.name for b in opened.backbones) if len(opened.backbones) > 1 else (),
    )


def _first_trials(space: Space, contexts: list[SpaceContext]) -> list[dict[str, Any]]:
    """The space's known-good recipes; searching several backbones, each recipe on each backbone in turn."""
    if space.first_trials is None:
        return []
    if len(contexts) == 1:
        return space.first_trials(contexts[0])
    per_backbone = [[p | {BACKBONE_PARAM: ctx.backbone} for p in space.first_trials(ctx)] for ctx in contexts]
    return [params for recipes in zip_longest(*per_backbone) for params in recipes if params is not None]


def prepare(spec: StudySpec, *, started: float | None = None) -> PreparedStudy:
    """Open the study and build its kind's data and caches once for this process (once per backbone searched).

    `started` (time.monotonic()) is when the command began: --time-budget counts from there.
    """
    budget = (
        Budget(spec.time_budget, started if started is not None else time.monotonic()) if spec.time_budget else None
    )
    keep_freed_memory()  # every batch allocates the same big tensors: reuse them instead of faulting pages in
    opened = open_spec(spec)
    resolved = resolve(spec, opened)
    if opened.stored is not None:
        check_same_setup(spec, resolved, opened.stored)  # before decoding: a mismatch should not cost minutes
    check_sources(spec.warm_start, opened.storage, opened.space)
    inputs = [
        KindInputs(
            backbone=backbone,
            device=opened.device,
            image_size=resolved.image_size,
            cache_dir=spec.cache_dir,
            weights=resolved.backbone_weights if backbone is opened.backbone else backbone.weights,
            source=opened.tapped,
        )
        for backbone in opened.backbones
    ]
    for backbone in opened.backbones:
        backbone.stages.to(opened.device)
    prepared = opened.kind.prepare(opened.source, inputs[0])
    data = _split(spec, prepared.data, opened)
    study = optuna.create_study(
        study_name=spec.name,
        storage=opened.storage,
        directions=spec.directions,
        # offset by the trials so far and the worker's index, so no resume or worker replays another's draws
        sampler=make_sampler(spec.sampler, worker_seed(spec.seed, opened.stored.trials if opened.stored else 0)),
        pruner=make_pruner("none" if spec.pareto else spec.pruner, spec.max_epochs),
        load_if_exists=True,
    )
    if opened.stored is None or opened.stored.split is None:  # this process made the split: record it, unless beaten
        data = data.with_split(claim_split(study, data))
    write_setup(study, spec.to_record(), resolved)
    prepared = replace(prepared, data=data)
    each = [prepared] + [opened.kind.prepare_another(prepared, opened.source, more) for more in inputs[1:]]
    settings = TrainSettings(
        max_epochs=spec.max_epochs,
        patience=spec.patience,
        device=opened.device,
        seed=spec.seed,
        metric=spec.metric,
        deadline=budget.deadline if budget else None,
    )
    setups: dict[str, BackboneSetup] = {}
    needed = 0.0  # seconds the first trials take, for --time-budget
    for backbone, its in zip(opened.backbones, each, strict=True):
        plan, costs = plan_study(study, opened.kind, backbone, opened.device, its, spec.max_epochs, budget)
        context = _context(opened, backbone, data, its.feature_layers, plan)
        if budget is not None and costs is not None:
            mine = _first_trials(opened.space, [context])
            needed += first_trials_seconds(mine, opened.space.suggest, context, costs, backbone, its, spec.max_epochs)
        resources = Resources(
            kind=opened.kind,
            prepared=its,
            backbone=backbone,
            settings=settings,
            artifact_store=opened.store,
            costs=CostMeter(resolved.image_size, settings.device),
            limits=spec.limits,
            latency_objective=spec.pareto,
            source=opened.tapped,
        )
        setups[backbone.name] = BackboneSetup(context, resources, plan)
    if budget is not None:
        budget.check(needed)
    first = _first_trials(opened.space, [setup.context for setup in setups.values()])
    contexts = {name: setup.context for name, setup in setups.items()}
    queued = first + warm_start_trials(spec.warm_start, opened.storage, opened.space, contexts)
    for params in queued[: spec.trials]:  # the known-good recipes first, as many as --trials asks; once each
        study.enqueue_trial(params, skip_if_exists=True)
    return PreparedStudy(spec, resolved, study, opened.space, setups, budget)


class _StopAfterFailures:
    """Stops the study when trials keep failing, instead of looping on a broken setup."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.reason: str | None = None  # set when it stopped the study

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            last = TrialFacts.of(trial).fail_reason or "run with -v for details"
            self.reason = f"{self.in_a_row} trials failed in a row (last: {last})"
            study.stop()


def _trial_setups(prepared: PreparedStudy) -> tuple[Any, Any]:
    """What make_objective takes: one context and resources, or each backbone's by name."""
    if len(prepared.setups) == 1:
        return prepared.context, prepared.resources
    return (
        {name: setup.context for name, setup in prepared.setups.items()},
        {name: setup.resources for name, setup in prepared.setups.items()},
    )


def run(prepared: PreparedStudy, *, callbacks: Sequence[Callback] = ()) -> None:
    """Top the study up to `spec.trials` finished trials, shared with any other workers on it.

    StudyAborted when trials keep failing.
    """
    spec, study = prepared.spec, prepared.study
    objective = tagged(make_objective(prepared.space.suggest, *_trial_setups(prepared)))
    guard = _StopAfterFailures(MAX_FAILURES_IN_A_ROW)
    stops: list[Callback] = [StopWhenCovered(spec.trials), guard]
    timeout = spec.timeout
    if prepared.budget is not None:  # --trials and --time-budget together: whichever comes first
        stops.append(StopBeforeOverrun(prepared.budget))
        timeout = min(timeout or math.inf, max(0.0, prepared.budget.left()))
    for time_left in rounds(study, spec.trials, timeout=timeout):  # returns at once if the study is done
        study.optimize(  # no n_trials: failed trials do not count; StopWhenCovered counts the whole study
            objective,
            timeout=time_left,
            catch=(TrialFailed,),
            callbacks=[*stops, *callbacks],
        )
        if guard.reason is not None:
            raise StudyAborted(f"{guard.reason}; fix the setup, then run the same command to resume")
    resources = prepared.resources
    finish_study(
        study,
        resources.artifact_store,
        device=resources.settings.device,
        kind=resources.kind,
        prepared=resources.prepared,
    )
