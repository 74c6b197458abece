"""The optimiser choice every trained-network space makes the same way: its name, its learning rate, SGD's momentum."""

from __future__ import annotations

import optuna

from search.training.configs import OPTIMIZERS

SGD_MOMENTUM = 0.9  # with lr searched, momentum hardly matters (Li et al., ICLR 2020): fixed, one axis fewer


def suggest_optimizer(
    trial: optuna.trial.BaseTrial, *, sgd_lr: tuple[float, float], adam_lr: tuple[float, float]
) -> tuple[str, float, float]:
    """(optimizer, lr, momentum): each optimiser's learning rate in its own range (log scale), as its own parameter."""
    optimizer = trial.suggest_categorical("opt_name", list(OPTIMIZERS))
    if optimizer == "sgd":
        return optimizer, trial.suggest_float("opt_sgd_lr", *sgd_lr, log=True), SGD_MOMENTUM
    return optimizer, trial.suggest_float("opt_adam_lr", *adam_lr, log=True), 0.0
