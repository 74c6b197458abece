"""The Optuna adapter: the only place where a trial meets a trainer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore

from search.artifacts import save_trial_artifacts
from search.backbones import Backbone
from search.checkpoints import save_if_best
from search.configs import FeaturesConfig, FinetuneConfig, SpaceContext
from search.dataset import Dataset
from search.errors import UserError
from search.features_trainer import LayerFeatures, train_features
from search.finetune_trainer import train_finetune
from search.prefix_cache import FrozenPrefixCache
from search.training import EpochMetrics, Reporter, TrainSettings, TrialResult


@dataclasses.dataclass(frozen=True)
class Resources:
    """Built once per process and handed to every trial: never rebuilt inside one."""

    data: Dataset
    backbone: Backbone
    settings: TrainSettings
    cache: FrozenPrefixCache | None = None  # finetune studies: frozen-prefix activations
    features: LayerFeatures | None = None  # features studies: pooled layers from the on-disk feature cache
    artifact_store: FileSystemArtifactStore | None = None  # None: trials keep no files (unit tests)


def _run_finetune(config: FinetuneConfig, res: Resources, reporter: Reporter, settings: TrainSettings) -> TrialResult:
    if not res.data.has_images:
        raise UserError("the space returned a FinetuneConfig in a features study; use --space finetune")
    return train_finetune(config, res.data, res.backbone, reporter, settings, cache=res.cache)


def _run_features(config: FeaturesConfig, res: Resources, reporter: Reporter, settings: TrainSettings) -> TrialResult:
    if res.features is None:
        raise UserError(
            "the space returned a FeaturesConfig, but the study was prepared for fine-tuning; a space file needs KIND = 'features'"
        )
    return train_features(config, res.data, res.features, reporter, settings)


Trainer = Callable[[Any, Resources, Reporter, TrainSettings], TrialResult]
TRAINERS: dict[type, Trainer] = {FinetuneConfig: _run_finetune, FeaturesConfig: _run_features}


class TrialFailed(Exception):
    """A trial that could not train (e.g. CUDA out of memory); the study catches it and goes on."""


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


def trainer_for(config: object) -> Trainer:
    """The trainer that runs configs of this type; a space returning anything else is a mistake."""
    try:
        return TRAINERS[type(config)]
    except KeyError:
        known = ", ".join(t.__name__ for t in TRAINERS)
        raise UserError(f"the space returned a {type(config).__name__}; it must return one of: {known}") from None


def record_result(trial: optuna.Trial, config: object, result: TrialResult) -> None:
    """Keep the trial's metrics, resolved config and curves as user attributes."""
    attrs: dict[str, Any] = {
        "config": dataclasses.asdict(config),  # type: ignore[call-overload]
        "status": result.status,
        "epochs_run": len(result.history),
        "seconds": round(result.seconds, 2),
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "history": [dataclasses.asdict(m) for m in result.history],
    }
    if result.best is not None:
        best = result.best
        attrs |= {
            "best_epoch": best.epoch,
            "val_loss": best.val_loss,
            "val_accuracy": best.val_accuracy,
            "train_loss": best.train_loss,
            "train_accuracy": best.train_accuracy,
        }
    if result.reason:
        attrs["fail_reason" if result.status != "pruned" else "prune_reason"] = result.reason
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def make_objective(
    suggest: Callable[[optuna.trial.BaseTrial, SpaceContext], Any], ctx: SpaceContext, resources: Resources
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective: suggest a config, train it with the shared resources, report, return."""

    def objective(trial: optuna.Trial) -> float:
        try:
            config = suggest(trial, ctx)
            trainer = trainer_for(config)
            settings = dataclasses.replace(resources.settings, seed=resources.settings.seed + trial.number)
            reporter = TrialReporter(trial, settings.metric)
            result = trainer(config, resources, reporter, settings)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C or SIGTERM)")
            raise
        except (TrialFailed, UserError) as exc:  # a space or trainer that cannot go on says why
            trial.set_user_attr("fail_reason", str(exc))
            raise
        record_result(trial, config, result)
        save_trial_artifacts(trial, result, resources.data, resources.artifact_store)
        if result.status == "complete" and resources.artifact_store is not None:
            save_if_best(trial, config, result, resources.artifact_store, metric=settings.metric)
        if result.status == "pruned":
            raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
        if result.status == "diverged":
            raise optuna.TrialPruned(result.reason)  # informative for the sampler: this region diverges
        if result.status != "complete" or result.best is None:
            raise TrialFailed(result.reason or result.status)
        return result.best.value(settings.metric)

    return objective
