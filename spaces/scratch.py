"""Scratch: a small CNN searched jointly with its training, from random weights: the baseline transfer must beat."""

from __future__ import annotations

from typing import Any

import optuna

from search.training.configs import AUGMENTATIONS, ScratchConfig, SpaceContext
from spaces._optimizers import suggest_optimizer
from spaces._registry import register_space

BATCH_SIZES = (32, 64, 128, 256)  # the CIFAR-10 report tried 32 and 256
SGD_LR = (1e-3, 0.3)
ADAM_LR = (1e-4, 1e-2)  # the report's 1e-4 and 1e-3 inside
FC_WIDTH = (64, 4096)  # the report's 1024-4096 units, and narrower for small sets
# Feature maps: the first block's, then each next one doubles (to a cap) or stays. On a CPU the widest
# conv costs are capped so that a trial's epoch on a few thousand 32 px images stays within seconds;
# a GPU searches the full 16-256 span.
FIRST_CHANNELS = {"cpu": {3: (16, 64), 5: (16, 32)}, "cuda": {3: (16, 256), 5: (16, 256)}}
MAX_CHANNELS = {"cpu": 128, "cuda": 256}


MAIN_CHOICES = ("blocks", "head_pool", "batchnorm", "optimizer", "augment")  # what a report compares first


def channels_per_block(first: int, blocks: int, growth: str, cap: int) -> tuple[int, ...]:
    """`first` maps in block 1, then doubled each block up to `cap` ("double") or the same ("constant")."""
    return tuple(min(cap, first * 2**i) if growth == "double" else first for i in range(blocks))


def batch_sizes_for(ctx: SpaceContext) -> list[int]:
    """At most a quarter of the training set, so an epoch has a few steps."""
    return [b for b in BATCH_SIZES if b <= max(BATCH_SIZES[0], ctx.train_size // 4)]


def users_cnn(ctx: SpaceContext) -> dict[str, Any]:
    """The users' own CIFAR-10 baseline, tried first: 3 blocks of 32/64/128 maps, a 512-unit layer, dropout 0.5."""
    return {
        "blocks": 3,
        "convs_per_block": 1,
        "kernel_size": 3,
        "channels_first": 32,
        "channels_growth": "double",
        "batchnorm": True,
        "pool": "max",
        "head_pool": "flatten",
        "fc_layers": 1,
        "fc_width": 512,
        "dropout": 0.5,
        "weight_decay": 1e-4,
        "optimizer": "adam",
        "lr@adam": 1e-3,
        "batch_size": 64 if 64 in batch_sizes_for(ctx) else batch_sizes_for(ctx)[0],
        "augment": "light",
    }


def first_trials(ctx: SpaceContext) -> list[dict[str, Any]]:
    return [users_cnn(ctx)]


@register_space("scratch", kind="scratch", first_trials=first_trials, main_choices=MAIN_CHOICES)
def suggest(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> ScratchConfig:
    """A small CNN from scratch: conv blocks, kernel, batch norm, pooling, dense layers and the optimiser, jointly."""
    device = "cpu" if ctx.device == "cpu" else "cuda"
    blocks = trial.suggest_int("blocks", 1, 4)
    convs = trial.suggest_int("convs_per_block", 1, 2)
    kernel = trial.suggest_categorical("kernel_size", [3, 5])
    first = trial.suggest_int("channels_first", *FIRST_CHANNELS[device][kernel], log=True)
    growth = trial.suggest_categorical("channels_growth", ["double", "constant"])
    batchnorm = trial.suggest_categorical("batchnorm", [True, False])
    pool = trial.suggest_categorical("pool", ["max", "avg"])
    head_pool = trial.suggest_categorical("head_pool", ["avg", "flatten"])
    fc_layers = trial.suggest_int("fc_layers", 0, 2)
    fc_width = trial.suggest_int("fc_width", *FC_WIDTH, log=True) if fc_layers else FC_WIDTH[0]
    dropout = trial.suggest_float("dropout", 0.0, 0.6)
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    optimizer, lr, momentum = suggest_optimizer(trial, sgd_lr=SGD_LR, adam_lr=ADAM_LR)
    return ScratchConfig(
        channels=channels_per_block(first, blocks, growth, MAX_CHANNELS[device]),
        convs_per_block=convs,
        kernel_size=kernel,
        batchnorm=batchnorm,
        pool=pool,
        head_pool=head_pool,
        fc_layers=fc_layers,
        fc_width=fc_width,
        dropout=dropout,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=trial.suggest_categorical("batch_size", batch_sizes_for(ctx)),
        augment=trial.suggest_categorical("augment", list(AUGMENTATIONS)),
    )
