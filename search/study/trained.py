"""The trained model of a study's trial, read back from the bundle it kept, ready to predict."""

from __future__ import annotations

from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from search.kinds import TrainedModel
from search.study.checkpoints import load_kept_model

CPU = torch.device("cpu")


def load_trial_model(
    study: optuna.Study, trial: FrozenTrial, store: Any, *, device: torch.device = CPU
) -> TrainedModel:
    """The trained model of a finished trial that kept one (the study's best does)."""
    return load_kept_model(trial, store, study_name=study.study_name, device=device)
