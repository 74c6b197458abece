"""The pruner a study runs (make_pruner) prunes a clearly worse trial and keeps better ones, in its direction."""

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
from search.study.runner import STARTUP_TRIALS, WARMUP_EPOCHS, make_pruner
from search.training.core import METRICS, EpochMetrics, TrainSettings
from spaces import get_space
from tests.spaces.test_finetune_space import CTX

FIRST_PRUNABLE_EPOCH = WARMUP_EPOCHS  # epochs count from 1; Optuna judges steps from n_warmup_steps on


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
def test_the_default_pruner_prunes_worse_and_keeps_better(tmp_path: Path, metric: str) -> None:
    """Its start-up trials run to the end; then a clearly worse curve stops at the first epoch it may."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'p.db'}", direction=METRICS[metric], pruner=make_pruner("median", 4)
    )
    for shift in range(STARTUP_TRIALS):  # fewer finished trials than this: nothing is pruned, however bad
        assert not _drive(study, metric, [(1.0 - shift / 10, 0.70), (0.6, 0.80), (0.4, 0.88), (0.3, 0.90)])
    worse = [(2.3, 0.10), (2.3, 0.11), (2.2, 0.12), (2.2, 0.12)]
    assert _drive(study, metric, worse)
    assert study.trials[-1].last_step == FIRST_PRUNABLE_EPOCH  # the warm-up epochs are never judged
    assert not _drive(study, metric, [(0.8, 0.75), (0.4, 0.85), (0.2, 0.93), (0.1, 0.97)])  # better
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 1


def test_before_its_start_up_trials_finish_nothing_is_pruned(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", pruner=make_pruner("median", 4))
    assert not _drive(study, "val_loss", [(0.5, 0.9)] * 4)
    assert not _drive(study, "val_loss", [(2.3, 0.1)] * 4)  # far worse, but one finished trial is no median


def test_real_trials_on_digits_prune_a_hopeless_configuration(
    tmp_path: Path, small_digits: Dataset, backbone: Backbone
) -> None:
    """Trained, not scripted, under the study's own pruner: a barely-learning rate is pruned after good trials."""
    settings = TrainSettings(max_epochs=3, patience=3, device=torch.device("cpu"), seed=0)
    prepared = Prepared(data=small_digits, shared=FrozenPrefixCache(backbone, small_digits, settings.device))
    resources = Resources(kind=get_kind("finetune"), prepared=prepared, backbone=backbone, settings=settings)
    ctx = CTX.__class__(**{**CTX.__dict__, "device": "cpu", "train_size": 280})
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'p.db'}", pruner=make_pruner("median", 3), direction=METRICS[settings.metric]
    )
    common = {
        "cut": "block5",
        "head_depth": 1,
        "head_width": 128,
        "head_batchnorm": True,
        "head_dropout": 0.0,
        "weight_decay": 1e-5,
        "batch_size": 32,
        "augment": "none",
        "unfreeze_blocks": 0,
        "optimizer": "adam",
    }
    rates = [3e-3, 4e-3, 5e-3, 1e-5]  # three start-up trials, then the hopeless one
    for rate in rates:
        study.enqueue_trial(common | {"lr@adam": rate})
    study.optimize(make_objective(get_space("finetune").suggest, ctx, resources), n_trials=len(rates))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert study.trials[3].user_attrs["epochs_run"] == FIRST_PRUNABLE_EPOCH
    assert study.trials[0].user_attrs["val_accuracy"] > 0.6
