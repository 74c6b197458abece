"""The Optuna adapter: the only place where a trial meets its kind's trainer."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore

from search.data.sources import VAL
from search.errors import UserError
from search.kinds import (
    MeasuresCosts,
    ModelInputs,
    Prepared,
    SavesModels,
    SourceTrial,
    StudyKind,
    TrainedModel,
    kind_of_config,
)
from search.models.backbones import Backbone
from search.study import trial_facts as attr
from search.study.artifacts import save_trial_artifacts
from search.study.checkpoints import save_if_among_best
from search.study.costs import CostMeter
from search.study.spec import LATENCY_LIMIT, SIZE_LIMIT
from search.training.configs import BACKBONE_PARAM
from search.training.core import EpochMetrics, NullReporter, Status, TrainSettings, TrialFailed, TrialResult

log = logging.getLogger(__name__)
UNMEASURED = 1e9  # the constraint of a model that could not be timed: it cannot be shown to fit, so it does not


@dataclasses.dataclass(frozen=True)
class Resources:
    """Built once per process and handed to every trial: never rebuilt inside one."""

    kind: StudyKind
    prepared: Prepared  # the kind's data and what its trials share (a frozen-prefix or feature cache)
    backbone: Backbone
    settings: TrainSettings
    artifact_store: FileSystemArtifactStore | None = None  # None: trials keep no files (unit tests)
    costs: CostMeter | None = None  # None: complete trials are not timed (unit tests)
    limits: dict[str, float] = dataclasses.field(default_factory=dict)  # StudySpec.limits: constraints to set
    latency_objective: bool = False  # a Pareto study (--objectives accuracy,latency): latency is a second value
    source: SourceTrial | None = None  # --from-trial: the trial whose network the study stands on

    def model_of(self, config: object, result: TrialResult) -> TrainedModel:
        """A trial's trained parts as the model it keeps: what `export` and --from-trial read back."""
        data = self.prepared.data
        inputs = ModelInputs(self.backbone, data.class_names, data.image_size, self.settings.device, self.source)
        return self.kind.trained_model(dataclasses.asdict(config), result.model, inputs)  # type: ignore[call-overload]


class TrialReporter:
    """Reports the study's metric to the trial each epoch and asks the pruner whether to stop.

    The value reported is the same metric the objective returns, so intermediate values and the
    study's direction always agree.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def report(self, epoch: int, metrics: EpochMetrics) -> bool:
        self.trial.report(metrics.value(self.metric), epoch)
        return self.trial.should_prune()


def checked_config(config: object, kind: StudyKind) -> object:
    """The space's config when it belongs to the study's kind; a one-line error naming both otherwise."""
    belongs = kind_of_config(config)
    if belongs is not kind:
        raise UserError(
            f"the space returned a {type(config).__name__} in a {kind.name} study; "
            f"a space file for {belongs.name} studies needs KIND = '{belongs.name}'"
        )
    return config


def record_result(trial: optuna.Trial, config: object, result: TrialResult) -> None:
    """Keep the trial's metrics, resolved config and curves as user attributes."""
    attrs: dict[str, Any] = {
        attr.CONFIG: dataclasses.asdict(config),  # type: ignore[call-overload]
        attr.STATUS: result.status.value,
        attr.EPOCHS_RUN: len(result.history),
        attr.SECONDS: round(result.seconds, 2),
        attr.TRAINABLE_PARAMS: result.trainable_params,
        attr.TOTAL_PARAMS: result.total_params,
        attr.HISTORY: [dataclasses.asdict(m) for m in result.history],
    }
    if result.best is not None:
        best = result.best
        attrs |= {
            attr.BEST_EPOCH: best.epoch,
            attr.VAL_LOSS: best.val_loss,
            attr.VAL_ACCURACY: best.val_accuracy,
            attr.TRAIN_LOSS: best.train_loss,
            attr.TRAIN_ACCURACY: best.train_accuracy,
        }
    if result.reason:
        reasons = {Status.PRUNED: attr.PRUNE_REASON, Status.COMPLETE: attr.STOP_REASON}
        attrs[reasons.get(result.status, attr.FAIL_REASON)] = result.reason
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def record_costs(
    trial: optuna.Trial, config: object, result: TrialResult, resources: Resources, meter: CostMeter
) -> None:
    """Parameters, bytes and latency of the trial's model as user attributes (search.study.costs), and the
    study's deployment constraints on them as Optuna trial constraints (over zero: infeasible)."""
    costs: dict[str, float | int] = {}
    kind = resources.kind
    try:
        if isinstance(kind, MeasuresCosts):  # a kind that cannot be timed leaves its trials unmeasured
            costs = meter.measure(kind.inference_parts(config, result.model, resources.prepared, resources.backbone))
    except Exception as exc:  # a model that cannot be timed is still a trained trial: keep it, say why
        log.warning("trial %d: its model could not be timed (%s: %s)", trial.number, type(exc).__name__, exc)
    for key, value in costs.items():
        trial.set_user_attr(key, value)
    size = costs.get(attr.SIZE_BYTES)
    measured: dict[str, float | None] = {
        LATENCY_LIMIT: costs.get(attr.LATENCY_MS_B1),
        SIZE_LIMIT: None if size is None else size / 1e6,
    }
    for name, limit in resources.limits.items():
        cost = measured[name]
        trial.set_constraint(name, UNMEASURED if cost is None else cost - limit)


def make_objective(
    suggest: Callable[[optuna.trial.BaseTrial, Any], Any],
    context: Any,
    resources: Resources | Mapping[str, Resources],
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """An Optuna objective: suggest a config, train it with the shared resources, report, return.

    Given each backbone's context and resources by name (a study that searches several), a trial first
    draws its `backbone`, then the space proposes a config on that backbone's context.
    """

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            if isinstance(resources, Mapping):
                name = trial.suggest_categorical(BACKBONE_PARAM, list(resources))
                return run_trial(trial, context[name], resources[name])
            return run_trial(trial, context, resources)
        except KeyboardInterrupt:  # in training or in the bookkeeping after it: the trial says why it failed
            trial.set_user_attr(attr.FAIL_REASON, "interrupted by the user (Ctrl-C or SIGTERM)")
            raise

    def run_trial(trial: optuna.Trial, context: Any, resources: Resources) -> float | tuple[float, float]:
        kind = resources.kind
        try:
            config = checked_config(suggest(trial, context), kind)
            settings = dataclasses.replace(resources.settings, seed=resources.settings.seed + trial.number)
            # Optuna takes no intermediate values from a multi-objective trial: nothing to report, nothing prunes it
            reporter = NullReporter() if resources.latency_objective else TrialReporter(trial, settings.metric)
            result = kind.train(config, resources.prepared, resources.backbone, reporter, settings)
        except (TrialFailed, UserError) as exc:  # a space or trainer that cannot go on says why
            trial.set_user_attr(attr.FAIL_REASON, str(exc))
            raise
        record_result(trial, config, result)
        if result.status is Status.COMPLETE and resources.costs is not None:
            record_costs(trial, config, result, resources, resources.costs)  # constraints: before the checkpoint
        save_trial_artifacts(trial, result, resources.prepared.data, resources.artifact_store, metric=settings.metric)
        if result.status is Status.COMPLETE and resources.artifact_store is not None and isinstance(kind, SavesModels):
            val_labels = resources.prepared.data.labels_of(VAL)
            model_of = functools.partial(resources.model_of, config, result)
            save_if_among_best(
                trial, model_of, result, resources.artifact_store, metric=settings.metric, val_labels=val_labels
            )
        if result.status is Status.PRUNED:
            raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
        if result.status is Status.DIVERGED:
            raise optuna.TrialPruned(result.reason)  # informative for the sampler: this region diverges
        if result.status is not Status.COMPLETE or result.best is None:
            raise TrialFailed(result.reason or result.status.value)
        value = result.best.value(settings.metric)
        if resources.latency_objective:
            return value, float(trial.user_attrs.get(attr.LATENCY_MS_B1, UNMEASURED))
        return value

    return objective
