"""A trial stopped by Ctrl-C says so, wherever the signal lands: in training or in the bookkeeping after it."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore

from search.data.dataset import Dataset
from search.kinds import Prepared, get_kind
from search.models.backbones import Backbone
from search.models.prefix_cache import FrozenPrefixCache
from search.study.objective import Resources, make_objective
from search.study.trial_facts import FAIL_REASON
from search.training.core import TrainSettings
from spaces import get_space
from tests.spaces.test_finetune_space import CTX


class InterruptedWhileSaving(FileSystemArtifactStore):
    """A real artifact store, in which Ctrl-C arrives while the trial's first file is written."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_in_the_bookkeeping_fails_the_trial_with_the_reason(
    tmp_path: Path, small_digits: Dataset, backbone: Backbone
) -> None:
    settings = TrainSettings(max_epochs=1, patience=1, device=torch.device("cpu"), seed=0)
    prepared = Prepared(data=small_digits, shared=FrozenPrefixCache(backbone, small_digits, settings.device))
    store = InterruptedWhileSaving(str(tmp_path / "artifacts"))
    resources = Resources(get_kind("finetune"), prepared, backbone, settings, artifact_store=store)
    ctx = CTX.__class__(**{**CTX.__dict__, "device": "cpu", "train_size": 280})
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(KeyboardInterrupt):
        study.optimize(make_objective(get_space("finetune").suggest, ctx, resources), n_trials=1)
    (trial,) = study.trials
    assert trial.state.name == "FAIL"
    assert "epochs_run" in trial.user_attrs, "the signal came after training"
    assert "interrupted" in trial.user_attrs[FAIL_REASON]
