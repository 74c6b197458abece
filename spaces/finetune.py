"""Fine-tuning: cut point, head, optimiser and schedule, unfreezing (LP-FT, layer decay), augmentation, jointly."""

from __future__ import annotations

from typing import Any

import optuna

from search.training.configs import AUGMENTATIONS, FinetuneConfig, SpaceContext
from spaces._optimizers import suggest_optimizer
from spaces._registry import register_space

HEAD_WIDTHS = (64, 128, 256, 512)  # the seeds tried 64..512 units; wider overfits small sets
BATCH_SIZES = (16, 32, 64, 128, 256)  # a few hundred photos give few steps an epoch at 64+; 256 only for big sets
SGD_LR = (1e-4, 1e-1)  # effective rate lr / (1 - momentum) of 1e-3..1, the span of best rates across data sets
ADAM_LR = (1e-5, 1e-2)
PROBE_EPOCHS = (2, 10)  # LP passes over cached features: cheap, and a well-fitted head is what LP-FT needs


MAIN_CHOICES = ("backbone", "unfreeze_blocks", "augment", "cut", "optimizer")  # what a report compares first


def batch_sizes_for(ctx: SpaceContext) -> list[int]:
    """The batch sizes a study may try: at most a quarter of the training set, so an epoch has a few steps."""
    return [b for b in BATCH_SIZES if b <= max(BATCH_SIZES[0], ctx.train_size // 4)]


def _common(ctx: SpaceContext, cut: str) -> dict[str, Any]:
    batch_sizes = batch_sizes_for(ctx)
    return {
        ctx.own("cut"): cut,
        "head_depth": 0,
        "head_dropout": 0.2,  # light regularisation of a 1280-wide linear probe
        "label_smoothing": 0.1,  # the common fine-tuning default (timm, torchvision's recipes)
        "weight_decay": 1e-4,
        "optimizer": "adamw",
        "batch_size": 16 if 16 in batch_sizes else batch_sizes[0],  # many steps per epoch on small sets
    }


def linear_probe(ctx: SpaceContext) -> dict[str, Any]:
    """A linear head on the frozen network's deepest features: one cached pass of the images, then seconds.

    The baseline every transfer study reports; tried first, so no study ends below it.
    """
    probe = {"lr@adam": 3e-3, "unfreeze_blocks": 0, "augment": "none"}
    return _common(ctx, ctx.cut_points[-1]) | probe | ({"reinit_blocks": 0} if ctx.transferred else {})


def standard_recipe(ctx: SpaceContext) -> dict[str, Any]:
    """The transfer-learning recipe a practitioner would run by hand, tried second in every study.

    A linear head on the deepest features, fitted first on the cached frozen features (LP), then the
    last stage fine-tuned with it (FT), AdamW at 1e-3 with warm-up and cosine decay, under light
    augmentation where the device affords augmented epochs (search.study.planning), else on the cache.
    """
    cut = ctx.cut_points[-1]
    unfreeze = min(1, ctx.max_unfreeze[cut])  # the last stage: most of the gain, little of the cost
    return (
        _common(ctx, cut)
        | {
            "lr@adam": 1e-3,
            "unfreeze_blocks": unfreeze,
            "backbone_lr_factor": 1.0,  # the probe already fitted the head, so the stage may move at the same rate
            "train_bn": True,  # one stage adapts its batch norm to the new photos
            "unfreeze_staged": True,
            "head_only_epochs": 5,
            "augment": "light" if ctx.augments(cut, unfreeze) else "none",
        }
        | ({"reinit_blocks": 0} if ctx.transferred else {})
    )


def first_trials(ctx: SpaceContext) -> list[dict[str, Any]]:
    """The probe (seconds), then the standard recipe: the floor every study starts from."""
    return [linear_probe(ctx), standard_recipe(ctx)]


@register_space("finetune", first_trials=first_trials, main_choices=MAIN_CHOICES)
def suggest(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> FinetuneConfig:
    """Fine-tune a pretrained backbone cut at a chosen stage, with a new head."""
    cut = trial.suggest_categorical(ctx.own("cut"), list(ctx.cut_points))
    head_depth = trial.suggest_int("head_depth", 0, 2)  # 0: the linear probe of the standard recipe
    head_width, head_batchnorm = HEAD_WIDTHS[0], False
    if head_depth > 0:
        head_width = trial.suggest_categorical("head_width", list(HEAD_WIDTHS))
        head_batchnorm = trial.suggest_categorical("head_batchnorm", [False, True])
    head_dropout = trial.suggest_float("head_dropout", 0.0, 0.5)
    label_smoothing = trial.suggest_float("label_smoothing", 0.0, 0.2)
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)

    optimizer, lr, momentum = suggest_optimizer(trial, sgd_lr=SGD_LR, adam_lr=ADAM_LR)
    batch_sizes = batch_sizes_for(ctx)
    batch_size = trial.suggest_categorical("batch_size", batch_sizes)

    max_unfreeze = ctx.max_unfreeze[cut]
    # re-initialising trains every stage up to the cut: only where the device affords that much
    max_reinit = max_unfreeze - 1 if max_unfreeze >= ctx.stages.get(cut, max_unfreeze) else 0
    # Another trial's network: its first stages may start again from random weights, then all stages train.
    reinit_blocks = 0
    if ctx.transferred and max_reinit > 0:
        reinit_blocks = trial.suggest_int("reinit_blocks", 0, max_reinit)
    # with stages re-initialised every stage up to the cut trains anyway
    unfreeze_blocks = 0 if reinit_blocks else trial.suggest_int("unfreeze_blocks", 0, max_unfreeze)
    backbone_lr_factor, layer_decay, probe_epochs, train_bn = 1.0, 1.0, 0, True
    if unfreeze_blocks > 0:
        backbone_lr_factor = trial.suggest_float("backbone_lr_factor", 0.01, 1.0, log=True)
        train_bn = trial.suggest_categorical("train_bn", [False, True])
        if unfreeze_blocks > 1:
            layer_decay = trial.suggest_float("layer_decay", 0.5, 1.0)
        if trial.suggest_categorical("unfreeze_staged", [False, True]):  # LP-FT
            probe_epochs = trial.suggest_int("head_only_epochs", *PROBE_EPOCHS)
    # Augmenting a frozen backbone runs every image through all of it every epoch: minutes a trial on a CPU,
    # where the cached frozen features make such a trial take seconds; a GPU may afford it. Wherever augmented
    # epochs would not fit a trial's time (search.study.planning), trials read the cache instead.
    augment = "none"
    trained = max_unfreeze if reinit_blocks else unfreeze_blocks  # stages this trial trains
    if (trained > 0 or ctx.device != "cpu") and ctx.augments(cut, trained):
        augment = trial.suggest_categorical("augment", list(AUGMENTATIONS))
    return FinetuneConfig(
        cut=cut,
        head_width=head_width,
        head_depth=head_depth,
        head_batchnorm=head_batchnorm,
        head_dropout=head_dropout,
        weight_decay=weight_decay,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        unfreeze_blocks=unfreeze_blocks,
        backbone_lr_factor=backbone_lr_factor,
        head_only_epochs=probe_epochs,
        augment=augment,
        layer_decay=layer_decay,
        label_smoothing=label_smoothing,
        reinit_blocks=reinit_blocks,
        train_bn=train_bn,
    )
