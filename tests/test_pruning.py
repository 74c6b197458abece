"""The pruner prunes a clearly worse trial and keeps better ones, in the study's own direction."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from search.data.dataset import Dataset
from search.kinds import Prepared, get_kind
from search.models.backbones import Backbone
from search.models.prefix_cache import FrozenPrefixCache
from search.study.objective import Resources, TrialReporter, make_objective
from search.study.runner import make_pruner
from search.training.core import METRICS, EpochMetrics, TrainSettings
from spaces import get_space
from tests.test_finetune_space import CTX


def _epoch(epoch: int, loss: float, accuracy: float) -> EpochMetrics:
    return EpochMetrics(epoch, loss, accuracy, loss, accuracy, 0.0)


def _drive(study: optuna.Study, metric: str, curve: list[tuple[float, float]]) -> bool:
    """Run one trial through the real reporter; True when it was pruned."""
    trial = study.ask()
    reporter = TrialReporter(trial, metric)
    for epoch, (loss, accuracy) in enumerate(curve, start=1):
        if reporter.report(epoch, _epoch(epoch, loss, accuracy)):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return True
    study.tell(trial, _epoch(0, *min(curve) if metric == "val_loss" else max(curve, key=lambda c: c[1])).value(metric))
    return False


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_median_pruner_prunes_worse_and_keeps_better(tmp_path: Path, metric: str) -> None:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'p.db'}",
        direction=METRICS[metric],
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    good = [(1.0, 0.70), (0.6, 0.80), (0.4, 0.88), (0.3, 0.90)]
    assert not _drive(study, metric, good)
    assert not _drive(study, metric, [(0.9, 0.72), (0.5, 0.82), (0.35, 0.89), (0.25, 0.91)])
    assert _drive(study, metric, [(2.3, 0.10), (2.3, 0.11), (2.2, 0.12), (2.2, 0.12)])  # clearly worse
    assert not _drive(study, metric, [(0.8, 0.75), (0.4, 0.85), (0.2, 0.93), (0.1, 0.97)])  # better
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 1


def test_real_trials_on_digits_prune_a_hopeless_configuration(
    tmp_path: Path, small_digits: Dataset, backbone: Backbone
) -> None:
    """Trained, not scripted: a barely-learning learning rate is pruned after a good trial."""
    settings = TrainSettings(max_epochs=3, patience=3, device=torch.device("cpu"), seed=0)
    prepared = Prepared(data=small_digits, shared=FrozenPrefixCache(backbone, small_digits, settings.device))
    resources = Resources(kind=get_kind("finetune"), prepared=prepared, backbone=backbone, settings=settings)
    ctx = CTX.__class__(**{**CTX.__dict__, "device": "cpu", "train_size": 280})
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", pruner=make_pruner("median", 3))
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    common = {
        "backbone_cut": "block5",
        "head_depth": 1,
        "head_width": 128,
        "head_batchnorm": True,
        "head_dropout": 0.0,
        "opt_weight_decay": 1e-5,
        "batch_size": 32,
        "augment": "none",
        "unfreeze_blocks": 0,
        "opt_name": "adam",
    }
    study.enqueue_trial(common | {"opt_adam_lr": 3e-3})
    study.enqueue_trial(common | {"opt_adam_lr": 1e-5})
    study.enqueue_trial(common | {"opt_adam_lr": 5e-3})
    study.optimize(make_objective(get_space("finetune").suggest, ctx, resources), n_trials=3)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert study.trials[1].user_attrs["epochs_run"] == 1
    assert study.trials[0].user_attrs["val_accuracy"] > 0.6
