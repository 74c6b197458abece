"""Feature extraction: pooled backbone layers, their normalisation and PCA, into a classical classifier."""

from __future__ import annotations

from typing import Any

import optuna

from search.training.configs import CLASSIFIERS, POOLINGS, RF_MAX_FEATURES, SVM_KERNELS, FeaturesConfig, SpaceContext
from spaces._registry import register_space

KERNEL_SVM_MAX_ITEMS = 5_000  # an SVM's fit grows with the square of the items (bench/bench_classifiers.py)
RF_TREE_MAX_ITEMS = (
    10_000  # each tree draws at most this many items (max_samples): its cost stops growing with the data
)


MAIN_CHOICES = ("backbone", "classifier", "feat_pca")  # what a report compares first


def classifiers_for(train_size: int) -> list[str]:
    """What fits the data's size: kernel SVMs on small data, a logistic regression by SGD on big data."""
    if train_size <= KERNEL_SVM_MAX_ITEMS:
        return [name for name in CLASSIFIERS if name != "sgd"]
    return [name for name in CLASSIFIERS if name != "svm"]


def standard_recipe(ctx: SpaceContext) -> dict[str, Any]:
    """A logistic regression on the L2-normalised average pool of the deepest layer: the usual linear-probe baseline."""
    deepest = ctx.feature_layers[-1]
    return {ctx.own(f"feat_use_{layer}"): layer == deepest for layer in ctx.feature_layers} | {
        ctx.own(f"feat_pool_{deepest}"): "avg",
        ctx.own(f"feat_l2_{deepest}"): True,
        "feat_pca": False,
        "classifier": "logreg",
        "logreg_c": 0.1,  # strong regularisation: photos give few items for ~1,000 standardised features
    }


def first_trials(ctx: SpaceContext) -> list[dict[str, Any]]:
    return [standard_recipe(ctx)]


@register_space("features", kind="features", first_trials=first_trials, main_choices=MAIN_CHOICES)
def suggest(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> FeaturesConfig:
    """Which layers to tap (one on/off choice per layer, so the sampler learns which help), then a classifier."""
    layers, pooling, l2 = [], [], []
    for layer in ctx.feature_layers:
        if trial.suggest_categorical(ctx.own(f"feat_use_{layer}"), [False, True]):
            layers.append(layer)
            pooling.append(trial.suggest_categorical(ctx.own(f"feat_pool_{layer}"), list(POOLINGS)))
            l2.append(trial.suggest_categorical(ctx.own(f"feat_l2_{layer}"), [False, True]))
    if not layers:  # an empty subset has nothing to learn from; tell the sampler this corner is worthless
        raise optuna.TrialPruned("no feature layer chosen")
    pca_dims = (
        trial.suggest_int("pca_dims", 8, 256, log=True) if trial.suggest_categorical("feat_pca", [False, True]) else 0
    )

    classifier = trial.suggest_categorical("classifier", classifiers_for(ctx.train_size))
    params: dict[str, object] = {}
    if classifier == "rf":
        params = {
            "rf_n_estimators": trial.suggest_int("rf_n_estimators", 20, 300, log=True),
            "rf_min_samples_leaf": trial.suggest_int("rf_min_samples_leaf", 1, 20, log=True),
            "rf_max_features": trial.suggest_categorical("rf_max_features", list(RF_MAX_FEATURES)),
            "rf_balanced": trial.suggest_categorical("rf_balanced", [False, True]),
            "rf_max_samples": min(1.0, RF_TREE_MAX_ITEMS / max(1, ctx.train_size)),
        }
    elif classifier == "svm":
        kernel = trial.suggest_categorical("svm_kernel", list(SVM_KERNELS))
        params = {"svm_c": trial.suggest_float("svm_c", 1e-2, 1e3, log=True), "svm_kernel": kernel}
        if kernel != "linear":
            params["svm_gamma"] = trial.suggest_float("svm_gamma", 1e-5, 1e-1, log=True)
    elif classifier == "sgd":
        params = {"sgd_alpha": trial.suggest_float("sgd_alpha", 1e-6, 1e-2, log=True)}
    else:
        params = {"logreg_c": trial.suggest_float("logreg_c", 1e-3, 1e3, log=True)}
    return FeaturesConfig(
        layers=tuple(layers),
        pooling=tuple(pooling),
        l2_normalize=tuple(l2),
        pca_dims=pca_dims,
        classifier=classifier,
        **params,  # type: ignore[arg-type]
    )
