"""Fine-tuning: cut point, head, optimiser, batch size, unfreezing and augmentation, chosen jointly."""

from __future__ import annotations

import optuna

from search.configs import AUGMENTATIONS, OPTIMIZERS, FinetuneConfig, SpaceContext
from spaces._registry import register_space

HEAD_WIDTHS = (64, 128, 256, 512)  # the seeds tried 64..512 units; wider overfits small sets
BATCH_SIZES = (32, 64, 128, 256)  # the seeds' range; small batches are slow on CPU, so not below 32
CPU_MAX_UNFREEZE = 2  # backward through early stages costs 10-50 s an epoch on 2 CPU cores; a GPU may unfreeze all


@register_space("finetune")
def suggest(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> FinetuneConfig:
    """Fine-tune a pretrained backbone cut at a chosen stage, with a new head."""
    cut = trial.suggest_categorical("backbone_cut", list(ctx.cut_points))
    head_depth = trial.suggest_int("head_depth", 1, 3)
    head_width = trial.suggest_categorical("head_width", list(HEAD_WIDTHS))
    head_batchnorm = trial.suggest_categorical("head_batchnorm", [False, True])
    head_dropout = trial.suggest_float("head_dropout", 0.0, 0.6)
    weight_decay = trial.suggest_float("opt_weight_decay", 1e-6, 1e-2, log=True)

    optimizer = trial.suggest_categorical("opt_name", list(OPTIMIZERS))
    if optimizer == "sgd":
        lr = trial.suggest_float("opt_sgd_lr", 1e-3, 1e-1, log=True)  # SGD needs larger steps than Adam
        momentum = trial.suggest_float("opt_sgd_momentum", 0.8, 0.99)
    else:
        lr = trial.suggest_float("opt_adam_lr", 1e-5, 1e-2, log=True)
        momentum = 0.0
    batch_sizes = [b for b in BATCH_SIZES if b <= max(BATCH_SIZES[0], ctx.train_size // 4)]
    batch_size = trial.suggest_categorical("batch_size", batch_sizes)

    max_unfreeze = ctx.max_unfreeze[cut] if ctx.device != "cpu" else min(CPU_MAX_UNFREEZE, ctx.max_unfreeze[cut])
    unfreeze_blocks = trial.suggest_int("unfreeze_blocks", 0, max_unfreeze)
    backbone_lr_factor, head_only_epochs = 1.0, 0
    if unfreeze_blocks > 0:
        backbone_lr_factor = trial.suggest_float("unfreeze_lr_factor", 0.01, 1.0, log=True)
        if trial.suggest_categorical("unfreeze_staged", [False, True]):
            head_only_epochs = trial.suggest_int("unfreeze_head_epochs", 1, 3)
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
        head_only_epochs=head_only_epochs,
        augment=augment,
    )
