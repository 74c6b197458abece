"""The optimiser choice every trained-network space makes the same way: its name, its learning rate, SGD's momentum."""

from __future__ import annotations

import optuna

from search.training.configs import OPTIMIZERS

SGD_MOMENTUM = 0.9  # with lr searched, momentum hardly matters (Li et al., ICLR 2020): fixed, one axis fewer


def suggest_optimizer(
    trial: optuna.trial.BaseTrial, *, sgd_lr: tuple[float, float], adam_lr: tuple[float, float]
) -> tuple[str, float, float]:
    """(optimizer, lr, momentum): each optimiser's learning rate in its own range (log scale).

    The config has one `lr`; the study has `lr@sgd` and `lr@adam`, so that the sampler learns each
    range apart (the `@` suffix names the branch, as `cut@vgg16` names the backbone).
    """
    optimizer = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    if optimizer == "sgd":
        return optimizer, trial.suggest_float("lr@sgd", *sgd_lr, log=True), SGD_MOMENTUM
    return optimizer, trial.suggest_float("lr@adam", *adam_lr, log=True), 0.0
