"""The study runner: open the storage, resolve the setup, prepare the kind's data, run the optimisation loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from search.allocator import keep_freed_memory
from search.data.dataset import SPLIT_CODES, Dataset, stratified_split
from search.data.sizing import typical_size
from search.data.sources import TRAIN, ImageSource, open_source
from search.errors import StudyAborted, UserError
from search.kinds import KindInputs, SourceTrial, StudyKind, get_kind
from search.models.backbones import Backbone
from search.study.artifacts import open_artifact_store
from search.study.costs import CostMeter
from search.study.evaluation import finish_study
from search.study.objective import Resources, TrialFailed, make_objective
from search.study.planning import Budget, StopBeforeOverrun, TrialPlan, first_trials_seconds, plan_study
from search.study.record import (
    FAIL_REASON,
    Resolved,
    StudyRecord,
    claim_split,
    read_record,
    read_source_trial,
    write_setup,
)
from search.study.spec import IDENTITY_FIELDS, StudySpec
from search.study.storage import open_storage
from search.study.workers import StopWhenCovered, rounds, tagged, worker_seed
from search.training.configs import SpaceContext
from search.training.core import TrainSettings, resolve_device
from spaces import Space, get_space

MAX_FAILURES_IN_A_ROW = 5  # a study whose trials all fail is misconfigured; stop instead of looping
STARTUP_TRIALS = 3  # trials the median pruner lets finish before it compares: see make_pruner
Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass
class PreparedStudy:
    """Everything a worker process builds once before its first trial."""

    spec: StudySpec  # as asked for
    resolved: Resolved  # what the runner decided from it
    study: optuna.Study
    space: Space
    context: SpaceContext
    resources: Resources
    plan: TrialPlan | None = None  # what the trials may cost (network kinds); None: not planned
    budget: Budget | None = None  # --time-budget, counted from the command's start

    @property
    def data(self) -> Dataset:
        return self.resources.prepared.data


@dataclass(frozen=True)
class _Opened:
    """The first step's findings: what the spec names exists, and what the storage already holds."""

    space: Space
    kind: StudyKind
    device: torch.device
    source: ImageSource
    backbone: Backbone
    storage: optuna.storages.RDBStorage
    store: FileSystemArtifactStore
    stored: StudyRecord | None  # the study of this name, when it exists
    tapped: SourceTrial | None  # the trial named by --from-trial


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
    return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=2)


def _open(spec: StudySpec) -> _Opened:
    """Check what the spec names, cheapest first (a typo must not create a database), and open the storage."""
    space = get_space(spec.space)
    kind = get_kind(space.kind)
    device = resolve_device(spec.device)
    source = open_source(spec.data, root=spec.data_root, classes=spec.classes)
    backbone = kind.study_backbone(spec.backbone, pretrained=spec.pretrained, weights_file=spec.weights)
    storage = open_storage(spec.storage)
    store = open_artifact_store(spec.artifact_dir)
    tapped = _source_trial(spec, kind, backbone, storage, store)
    if tapped is not None:
        backbone = kind.source_backbone(tapped, backbone)
    return _Opened(space, kind, device, source, backbone, storage, store, read_record(storage, spec.name), tapped)


def _source_trial(
    spec: StudySpec, kind: StudyKind, backbone: Backbone, storage: optuna.storages.BaseStorage, store: Any
) -> SourceTrial | None:
    """The trial named by --from-trial; a fine-tuned one must have stood on this study's backbone flags."""
    if spec.from_trial is None:
        return None
    if not kind.accepts_source:
        raise UserError(
            f"--from-trial is not for {kind.name} studies; it transfers a trained network to --space finetune or features"
        )
    source = read_source_trial(spec.from_trial, storage, store)
    if not get_kind(source.kind).stands_on_backbone:
        return source  # a scratch network is its own backbone
    theirs = {"backbone": source.backbone, "pretrained": source.pretrained, "weights": source.weights}
    ours = {
        "backbone": backbone.name,
        "pretrained": spec.pretrained,
        "weights": str(spec.weights) if spec.weights else None,
    }
    for flag, value in theirs.items():  # the study records the backbone its network stands on
        if value != ours[flag]:
            raise UserError(f"trial {spec.from_trial} was trained with {flag}={value!r}; pass the same --{flag}")
    return source


def _resolve(spec: StudySpec, opened: _Opened) -> Resolved:
    """What the spec leaves open: the image size (asked, stored, the tapped network's, or the kind's default) and weights."""
    stored_size = opened.stored.image_size if opened.stored else None
    tapped_size = opened.tapped.image_size if opened.tapped else None  # the size the tapped network was trained at
    image_size = (
        spec.image_size
        or stored_size
        or tapped_size
        or opened.kind.input_size(
            native=typical_size(opened.source),
            backbone=opened.backbone,
            pretrained=spec.pretrained != "none" or spec.weights is not None,
            images=len(opened.source),
            device=opened.device,
        )
    )
    backbone = opened.backbone
    return Resolved(
        kind=opened.kind.name,
        device=str(opened.device),
        image_size=image_size,
        backbone_weights=opened.tapped.weights_id if opened.tapped else backbone.weights,
        mean=opened.tapped.mean if opened.tapped else backbone.mean,  # a transferred network keeps its preprocessing
        std=opened.tapped.std if opened.tapped else backbone.std,
        source=_source_summary(opened),
        backbone=backbone.name,
    )


def _source_summary(opened: _Opened) -> dict[str, Any] | None:
    """What the record says of a transferred trial: which, of what kind, trained on which data."""
    tapped = opened.tapped
    if tapped is None:
        return None
    return {
        "trial": f"{tapped.study_name}:{tapped.number}",
        "kind": tapped.kind,
        "classes": list(tapped.classes),
        "fingerprint": tapped.fingerprint,
        "same_data": tapped.fingerprint == opened.source.fingerprint(),
    }


def _check_same_setup(spec: StudySpec, resolved: Resolved, stored: StudyRecord) -> None:
    """Refuse to mix trials of another space, backbone, image size, metric or normalisation under one name."""
    old, current = dict(stored.spec), spec.to_record()
    was = stored.resolved
    if was is not None:  # the size is compared as resolved: a resume need not repeat --image-size
        old["image_size"], current["image_size"] = was.image_size, resolved.image_size
    for key in IDENTITY_FIELDS:
        if key in old and old[key] != current[key]:
            raise UserError(
                f"study '{spec.name}' was run with {key}={old[key]!r}, not {current[key]!r}; use another --study-name or the same {key}"
            )
    if was is None:
        return
    if (was.mean, was.std) != (resolved.mean, resolved.std):
        raise UserError(
            f"study '{spec.name}' was run with another pixel normalisation (mean {list(was.mean)}, std {list(was.std)}) "
            f"than {spec.backbone}'s weights need (mean {list(resolved.mean)}, std {list(resolved.std)}); use another --study-name"
        )


def _check_same_data(spec: StudySpec, recorded: StudyRecord, data: Dataset) -> None:
    """Refuse to mix trials of another dataset under one study name."""
    change = recorded.data.change_to(data) if recorded.data else None
    if change is not None:
        raise UserError(
            f"study '{spec.name}' was created with other data ({change}); use another --study-name for this data"
        )


def _split(spec: StudySpec, data: Dataset, opened: _Opened) -> Dataset:
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


def _context(opened: _Opened, data: Dataset, feature_layers: tuple[str, ...], plan: TrialPlan | None) -> SpaceContext:
    backbone = opened.backbone
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
    )


def prepare(spec: StudySpec, *, started: float | None = None) -> PreparedStudy:
    """Open the study and build its kind's data and caches once for this process.

    `started` (time.monotonic()) is when the command began: --time-budget counts from there.
    """
    budget = (
        Budget(spec.time_budget, started if started is not None else time.monotonic()) if spec.time_budget else None
    )
    keep_freed_memory()  # every batch allocates the same big tensors: reuse them instead of faulting pages in
    opened = _open(spec)
    resolved = _resolve(spec, opened)
    if opened.stored is not None:
        _check_same_setup(spec, resolved, opened.stored)  # before decoding: a mismatch should not cost minutes
    opened.backbone.stages.to(opened.device)
    inputs = KindInputs(
        backbone=opened.backbone,
        device=opened.device,
        image_size=resolved.image_size,
        cache_dir=spec.cache_dir,
        weights=resolved.backbone_weights,
        source=opened.tapped,
    )
    prepared = opened.kind.prepare(opened.source, inputs)
    data = _split(spec, prepared.data, opened)
    study = optuna.create_study(
        study_name=spec.name,
        storage=opened.storage,
        direction=spec.direction,
        # offset by the trials so far and the worker's index, so no resume or worker replays another's draws
        sampler=make_sampler(spec.sampler, worker_seed(spec.seed, opened.stored.trials if opened.stored else 0)),
        pruner=make_pruner(spec.pruner, spec.max_epochs),
        load_if_exists=True,
    )
    if opened.stored is None or opened.stored.split is None:  # this process made the split: record it, unless beaten
        data = data.with_split(claim_split(study, data))
    write_setup(study, spec.to_record(), resolved)
    prepared = replace(prepared, data=data)
    plan, costs = plan_study(study, opened.kind, opened.backbone, opened.device, prepared, spec.max_epochs, budget)
    context = _context(opened, data, prepared.feature_layers, plan)
    first = opened.space.first_trials(context) if opened.space.first_trials is not None else []
    if budget is not None:
        needed = (
            0.0
            if costs is None
            else first_trials_seconds(
                first, opened.space.suggest, context, costs, opened.backbone, prepared, spec.max_epochs
            )
        )
        budget.check(needed)
    for params in first[: spec.trials]:  # the known-good recipes first, as many as --trials asks; once each
        study.enqueue_trial(params, skip_if_exists=True)
    settings = TrainSettings(
        max_epochs=spec.max_epochs,
        patience=spec.patience,
        device=opened.device,
        seed=spec.seed,
        metric=spec.metric,
        deadline=budget.deadline if budget else None,
    )
    resources = Resources(
        kind=opened.kind,
        prepared=prepared,
        backbone=opened.backbone,
        settings=settings,
        artifact_store=opened.store,
        costs=CostMeter(resolved.image_size, settings.device),
    )
    return PreparedStudy(spec, resolved, study, opened.space, context, resources, plan, budget)


class _StopAfterFailures:
    """Stops the study when trials keep failing, instead of looping on a broken setup."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.reason: str | None = None  # set when it stopped the study

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            last = trial.user_attrs.get(FAIL_REASON, "run with -v for details")
            self.reason = f"{self.in_a_row} trials failed in a row (last: {last})"
            study.stop()


def run(prepared: PreparedStudy, *, callbacks: Sequence[Callback] = ()) -> None:
    """Top the study up to `spec.trials` finished trials, shared with any other workers on it.

    StudyAborted when trials keep failing.
    """
    spec, study = prepared.spec, prepared.study
    objective = tagged(make_objective(prepared.space.suggest, prepared.context, prepared.resources))
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
