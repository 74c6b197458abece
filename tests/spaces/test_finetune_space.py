"""The finetune space: deterministic through FixedTrial, conditional parameters only where they apply."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from search.errors import UserError
from search.training.configs import FinetuneConfig, SpaceContext, config_from_dict
from spaces import get_space, list_spaces
from spaces._optimizers import SGD_MOMENTUM
from spaces.finetune import SGD_LR

CTX = SpaceContext(
    backbone="efficientnet_lite0",
    cut_points=("block5", "block7"),
    max_unfreeze={"block5": 6, "block7": 8},
    num_classes=10,
    train_size=1300,
    device="cuda",
)
BASE = {
    "cut": "block7",
    "head_depth": 2,
    "head_width": 128,
    "head_batchnorm": True,
    "head_dropout": 0.3,
    "label_smoothing": 0.0,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "augment": "light",
}


def test_fixed_trial_gives_the_exact_config() -> None:
    params = BASE | {
        "label_smoothing": 0.1,
        "optimizer": "sgd",
        "lr@sgd": 0.01,
        "unfreeze_blocks": 2,
        "backbone_lr_factor": 0.1,
        "train_bn": False,
        "layer_decay": 0.8,
        "unfreeze_staged": True,
        "head_only_epochs": 4,
    }
    config = get_space("finetune").suggest(optuna.trial.FixedTrial(params), CTX)
    assert config == FinetuneConfig(
        cut="block7",
        head_width=128,
        head_depth=2,
        head_batchnorm=True,
        head_dropout=0.3,
        weight_decay=1e-4,
        optimizer="sgd",
        lr=0.01,
        momentum=SGD_MOMENTUM,  # fixed, not searched
        batch_size=64,
        unfreeze_blocks=2,
        backbone_lr_factor=0.1,
        head_only_epochs=4,
        augment="light",
        layer_decay=0.8,
        label_smoothing=0.1,
        train_bn=False,
    )


def test_sgd_learning_rates_span_at_least_three_decades() -> None:
    assert SGD_MOMENTUM == 0.9 and SGD_LR[1] / SGD_LR[0] >= 1e3


@pytest.mark.parametrize("ctx", [CTX, dataclasses.replace(CTX, device="cpu", train_size=40)])
def test_a_study_starts_with_the_probe_then_the_standard_recipe(ctx: SpaceContext) -> None:
    space = get_space("finetune")
    assert space.first_trials is not None
    probe, recipe = (space.suggest(optuna.trial.FixedTrial(p), ctx) for p in space.first_trials(ctx))
    assert probe.cut == ctx.cut_points[-1] and probe.head_depth == 0 and probe.unfreeze_blocks == 0
    assert probe.augment == "none"  # a linear head on the cached frozen features: seconds
    assert recipe.cut == ctx.cut_points[-1] and recipe.head_depth == 0 and recipe.unfreeze_blocks == 1
    assert recipe.head_only_epochs > 0 and recipe.augment != "none"  # LP-FT with augmentation
    assert recipe.batch_size <= max(16, ctx.train_size // 4)


def test_the_standard_recipe_reads_the_cache_where_augmented_epochs_cost_too_much() -> None:
    slow = dataclasses.replace(CTX, device="cpu", augment_up_to={"block5": -1, "block7": 0})
    space = get_space("finetune")
    assert space.first_trials is not None
    recipe = space.suggest(optuna.trial.FixedTrial(space.first_trials(slow)[1]), slow)
    assert (recipe.unfreeze_blocks, recipe.head_only_epochs > 0, recipe.augment) == (1, True, "none")


def test_the_first_trials_are_what_a_new_study_asks_first(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    space = get_space("finetune")
    assert space.first_trials is not None
    for params in space.first_trials(CTX):
        study.enqueue_trial(params, skip_if_exists=True)
    for params in space.first_trials(CTX):
        trial = study.ask()
        assert space.suggest(trial, CTX) == space.suggest(optuna.trial.FixedTrial(params), CTX)
        study.tell(trial, 0.0)


def test_frozen_backbone_asks_no_unfreezing_parameters() -> None:
    params = BASE | {"optimizer": "adam", "lr@adam": 1e-3, "unfreeze_blocks": 0}
    config = get_space("finetune").suggest(optuna.trial.FixedTrial(params), CTX)
    assert (config.unfreeze_blocks, config.head_only_epochs, config.backbone_lr_factor, config.momentum) == (
        0,
        0,
        1.0,
        0.0,
    )


def test_conditional_parameters_appear_only_in_their_branch() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = get_space("finetune")
    for _ in range(60):
        trial = study.ask()
        config = space.suggest(trial, CTX)
        study.tell(trial, 0.0)
        params = trial.params
        assert ("lr@sgd" in params) == (config.optimizer == "sgd")
        assert ("lr@adam" in params) == (config.optimizer != "sgd")
        assert ("backbone_lr_factor" in params) == (config.unfreeze_blocks > 0)
        assert ("head_only_epochs" in params) == (config.head_only_epochs > 0)
        assert ("layer_decay" in params) == (config.unfreeze_blocks > 1)
        assert ("train_bn" in params) == (config.unfreeze_blocks > 0)
        assert config.train_bn or config.unfreeze_blocks > 0
        assert ("head_width" in params) == ("head_batchnorm" in params) == (config.head_depth > 0)
        assert config.momentum == (SGD_MOMENTUM if config.optimizer == "sgd" else 0.0)
        assert config.unfreeze_blocks <= CTX.max_unfreeze[config.cut]


def test_a_frozen_backbone_on_a_cpu_never_augments() -> None:
    cpu = SpaceContext(**{**CTX.__dict__, "device": "cpu"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    configs = [get_space("finetune").suggest(study.ask(), cpu) for _ in range(40)]
    # a frozen backbone on a CPU trains on cached features: augmenting would rerun the whole network every epoch
    assert all(config.augment == "none" for config in configs if config.unfreeze_blocks == 0)


def test_unknown_space_lists_known_ones() -> None:
    assert "finetune" in list_spaces()
    with pytest.raises(UserError, match="unknown space 'nope'; choose one of: features, finetune"):
        get_space("nope")


def test_user_space_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(
        "from spaces.finetune import suggest as base\ndef suggest(trial, ctx):\n    return base(trial, ctx)\n"
    )
    assert get_space(str(path)).suggest is not None
    (tmp_path / "broken.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="must define suggest"):
        get_space(str(tmp_path / "broken.py"))


def test_config_from_dict_is_strict() -> None:
    values = {
        "cut": "block7",
        "head_width": 64,
        "head_depth": 1,
        "head_batchnorm": False,
        "head_dropout": 0.0,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "lr": 1e-3,
        "momentum": 0.0,
        "batch_size": 32,
        "unfreeze_blocks": 0,
        "backbone_lr_factor": 1.0,
        "head_only_epochs": 0,
        "augment": "none",
    }
    assert config_from_dict(FinetuneConfig, values).lr == 1e-3
    # fields added later (layer_decay, label_smoothing) keep their defaults, so older trials still load
    assert config_from_dict(FinetuneConfig, values).layer_decay == 1.0
    with pytest.raises(UserError, match="missing \\['augment'\\]"):
        config_from_dict(FinetuneConfig, {k: v for k, v in values.items() if k != "augment"})
    with pytest.raises(UserError, match="unknown FinetuneConfig keys \\['head_widht'\\]"):
        config_from_dict(FinetuneConfig, values | {"head_widht": 3})
    with pytest.raises(UserError, match="head_width must be int"):
        config_from_dict(FinetuneConfig, values | {"head_width": "wide"})
    with pytest.raises(UserError, match="optimizer must be one of"):
        config_from_dict(FinetuneConfig, values | {"optimizer": "lbfgs"})
    with pytest.raises(UserError, match="out-of-range train_bn"):  # re-initialised stages have no statistics to keep
        config_from_dict(FinetuneConfig, values | {"reinit_blocks": 1, "train_bn": False})


def test_the_space_offers_what_the_plan_affords() -> None:
    planned = dataclasses.replace(
        CTX, device="cpu", max_unfreeze={"block5": 0, "block7": 2}, augment_up_to={"block5": -1, "block7": 1}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    configs = [get_space("finetune").suggest(study.ask(), planned) for _ in range(60)]
    assert {c.unfreeze_blocks for c in configs if c.cut == "block5"} == {0}
    assert {c.unfreeze_blocks for c in configs if c.cut == "block7"} == {0, 1, 2}
    assert {c.augment for c in configs if c.cut == "block5" or c.unfreeze_blocks != 1} == {"none"}
    assert len({c.augment for c in configs if c.cut == "block7" and c.unfreeze_blocks == 1}) > 1
