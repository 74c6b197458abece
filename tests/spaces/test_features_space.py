"""The features space, checked deterministically with FixedTrial: each branch gives the config expected."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from search.training.configs import FeaturesConfig, SpaceContext
from spaces import get_space
from spaces.features import KERNEL_SVM_MAX_ITEMS, RF_TREE_MAX_ITEMS, classifiers_for, standard_recipe, suggest

CTX = SpaceContext(
    backbone="efficientnet_lite0",
    cut_points=("block4", "conv_head"),
    max_unfreeze={"block4": 2, "conv_head": 3},
    num_classes=10,
    train_size=500,
    device="cpu",
    feature_layers=("block3", "block5", "conv_head"),
)
SVM_TWO_LAYERS: dict[str, Any] = {
    "feat_use_block3": True,
    "feat_pool_block3": "max",
    "feat_l2_block3": False,
    "feat_use_block5": False,
    "feat_use_conv_head": True,
    "feat_pool_conv_head": "both",
    "feat_l2_conv_head": True,
    "feat_pca": True,
    "pca_dims": 64,
    "classifier": "svm",
    "svm_kernel": "rbf",
    "svm_c": 3.0,
    "svm_gamma": 0.001,
}
ONLY_BLOCK5 = {
    "feat_use_block3": False,
    "feat_use_block5": True,
    "feat_pool_block5": "avg",
    "feat_l2_block5": True,
    "feat_use_conv_head": False,
    "feat_pca": False,
}


def test_svm_on_two_layers_with_pca() -> None:
    config = suggest(optuna.trial.FixedTrial(SVM_TWO_LAYERS), CTX)
    assert config == FeaturesConfig(
        layers=("block3", "conv_head"),
        pooling=("max", "both"),
        l2_normalize=(False, True),
        pca_dims=64,
        classifier="svm",
        svm_c=3.0,
        svm_kernel="rbf",
        svm_gamma=0.001,
    )


@pytest.mark.parametrize(
    ("classifier", "expected"),
    [
        ({"classifier": "logreg", "logreg_c": 0.03}, {"classifier": "logreg", "logreg_c": 0.03}),
        (  # a linear kernel asks for no gamma (FixedTrial would fail on a parameter it was not given)
            {"classifier": "svm", "svm_kernel": "linear", "svm_c": 0.5},
            {"classifier": "svm", "svm_kernel": "linear", "svm_c": 0.5, "svm_gamma": 0.0},
        ),
        (
            {
                "classifier": "rf",
                "rf_n_estimators": 150,
                "rf_min_samples_leaf": 4,
                "rf_max_features": "log2",
                "rf_balanced": True,
            },
            {
                "classifier": "rf",
                "rf_n_estimators": 150,
                "rf_min_samples_leaf": 4,
                "rf_max_features": "log2",
                "rf_balanced": True,
            },
        ),
    ],
    ids=["logreg", "linear-svm", "rf"],
)
def test_each_classifier_branch_sets_only_its_own_parameters(
    classifier: dict[str, Any], expected: dict[str, Any]
) -> None:
    config = suggest(optuna.trial.FixedTrial({**ONLY_BLOCK5, **classifier}), CTX)
    assert config == FeaturesConfig(layers=("block5",), pooling=("avg",), l2_normalize=(True,), pca_dims=0, **expected)


def test_no_layer_chosen_prunes_the_trial() -> None:
    params = {f"feat_use_{layer}": False for layer in CTX.feature_layers} | {"feat_pca": False, "classifier": "logreg"}
    with pytest.raises(optuna.TrialPruned, match="no feature layer chosen"):
        suggest(optuna.trial.FixedTrial(params), CTX)


def test_the_standard_recipe_is_a_logreg_on_the_deepest_layer() -> None:
    params = standard_recipe(CTX)
    assert params["feat_use_conv_head"] is True
    assert params["feat_use_block3"] is False and params["feat_use_block5"] is False
    config = suggest(optuna.trial.FixedTrial(params), CTX)
    assert config == FeaturesConfig(
        layers=("conv_head",), pooling=("avg",), l2_normalize=(True,), pca_dims=0, classifier="logreg", logreg_c=0.1
    )
    first_trials = get_space("features").first_trials
    assert first_trials is not None and first_trials(CTX) == [params], "what a new features study tries first"


def test_the_standard_recipe_is_in_the_space() -> None:
    """Enqueued as a study's first trial, every parameter must be one the space can propose."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(standard_recipe(CTX))
    trial = study.ask()
    suggest(trial, CTX)
    assert trial.params == standard_recipe(CTX)


def test_sampled_trials_give_valid_configs_or_are_pruned() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    outcomes = {"config": 0, "pruned": 0}
    for _ in range(40):
        trial = study.ask()
        try:
            config = suggest(trial, CTX)
        except optuna.TrialPruned:
            outcomes["pruned"] += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        outcomes["config"] += 1
        assert set(config.layers) <= set(CTX.feature_layers)
        assert list(config.layers) == [layer for layer in CTX.feature_layers if layer in config.layers], "forward order"
        assert (config.pca_dims == 0) != trial.params["feat_pca"]
        assert 8 <= config.pca_dims <= 256 or config.pca_dims == 0
        study.tell(trial, 1.0)
    assert outcomes["config"] > 20  # 1 in 8 trials chooses no layer


def test_kernel_svms_only_on_small_data_and_sgd_only_on_big_data() -> None:
    assert classifiers_for(KERNEL_SVM_MAX_ITEMS) == ["rf", "svm", "logreg"]
    assert classifiers_for(KERNEL_SVM_MAX_ITEMS + 1) == ["rf", "logreg", "sgd"]


def test_on_big_data_sgd_is_offered_and_each_tree_draws_a_bounded_sample() -> None:
    big = dataclasses.replace(CTX, train_size=4 * RF_TREE_MAX_ITEMS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        try:
            config = suggest(trial, big)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, 0.0)
        seen.add(config.classifier)
        assert config.classifier != "svm", "a kernel SVM grows with the square of the items"
        if config.classifier == "rf":
            assert config.rf_max_samples == 0.25
        if config.classifier == "sgd":
            assert 1e-6 <= config.sgd_alpha <= 1e-2
    assert seen == {"rf", "logreg", "sgd"}
    small = suggest(
        optuna.trial.FixedTrial(
            {
                **ONLY_BLOCK5,
                "classifier": "rf",
                "rf_n_estimators": 50,
                "rf_min_samples_leaf": 1,
                "rf_max_features": "sqrt",
                "rf_balanced": False,
            }
        ),
        CTX,
    )
    assert small.rf_max_samples == 1.0, "small data: every tree sees every item"
