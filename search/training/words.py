"""A trial's configuration in words, for people: only what applies, numbers rounded, defaults left out.

The console, the report and the comparison describe trials with these, never with raw parameters.
"""

from __future__ import annotations

from search.training.configs import FeaturesConfig, FinetuneConfig, ScratchConfig

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
CLASSIFIERS = {
    "rf": "random forest",
    "svm": "SVM",
    "logreg": "logistic regression",
    "sgd": "logistic regression by SGD",
}
POOLINGS = {"avg": "average-pooled", "max": "max-pooled", "both": "average- and max-pooled"}


def number(value: float) -> str:
    """Two significant figures, no trailing noise: 0.0043, 12, 1e-05."""
    return f"{value:.2g}"


def stages(count: int) -> str:
    return "the last stage" if count == 1 else f"the last {count} stages"


def finetune_method(config: FinetuneConfig) -> str:
    """Frozen head, LP-FT or stages trained: the three answers to "fine-tuning or features?"."""
    if config.reinit_blocks:
        return f"first {config.reinit_blocks} stages re-initialised, every stage trained"
    if config.unfreeze_blocks == 0:
        return "frozen head"
    if config.head_only_epochs:
        return f"LP-FT of {stages(config.unfreeze_blocks)}"
    return f"{stages(config.unfreeze_blocks)} trained with the head"


def _optimizer(optimizer: str, lr: float, momentum: float, weight_decay: float) -> str:
    text = f"{OPTIMIZERS.get(optimizer, optimizer)} at lr {number(lr)}"
    if optimizer == "sgd" and momentum:
        text += f", momentum {number(momentum)}"
    return text + (f", weight decay {number(weight_decay)}" if weight_decay else "")


def _head(depth: int, width: int, batchnorm: bool, dropout: float) -> str:
    head = "a linear head" if depth == 0 else f"a head of {depth} hidden layer{'s' if depth > 1 else ''} of {width}"
    if depth and batchnorm:
        head += " with batch norm"
    return head + (f", dropout {number(dropout)}" if dropout else "")


def _finishing(batch_size: int, augment: str, label_smoothing: float) -> list[str]:
    parts = [f"batch {batch_size}"]
    if augment != "none":
        parts.append(f"{augment} augmentation")
    if label_smoothing:
        parts.append(f"label smoothing {number(label_smoothing)}")
    return parts


def finetune_words(config: FinetuneConfig) -> str:
    parts = [f"{finetune_method(config)} at {config.cut}"]
    if config.head_only_epochs and config.unfreeze_blocks:
        parts.append(f"{config.head_only_epochs} head-only epochs first")
    parts.append(_head(config.head_depth, config.head_width, config.head_batchnorm, config.head_dropout))
    parts.append(_optimizer(config.optimizer, config.lr, config.momentum, config.weight_decay))
    if config.unfreeze_blocks or config.reinit_blocks:
        trained = f"stages at lr x{number(config.backbone_lr_factor)}"
        if config.layer_decay < 1:
            trained += f", layer decay {number(config.layer_decay)}"
        if not config.train_bn:
            trained += ", batch norm statistics kept"
        parts.append(trained)
    parts += _finishing(config.batch_size, config.augment, config.label_smoothing)
    return "; ".join(parts)


def classifier_words(config: FeaturesConfig) -> str:
    name = CLASSIFIERS.get(config.classifier, config.classifier)
    if config.classifier == "rf":
        detail = (
            f"{config.rf_n_estimators} trees, min leaf {config.rf_min_samples_leaf}, {config.rf_max_features} features"
        )
        detail += ", balanced" if config.rf_balanced else ""
    elif config.classifier == "svm":
        detail = f"{config.svm_kernel} kernel, C {number(config.svm_c)}"
        if config.svm_kernel != "linear":
            detail += f", gamma {number(config.svm_gamma) if config.svm_gamma else 'scale'}"
    elif config.classifier == "sgd":
        detail = f"alpha {number(config.sgd_alpha)}"
    else:
        detail = f"C {number(config.logreg_c)}"
    return f"{name} ({detail})"


def features_words(config: FeaturesConfig) -> str:
    poolings = set(config.pooling)
    if len(poolings) == 1:
        layers = f"{', '.join(config.layers)}, {POOLINGS[config.pooling[0]]}"
    else:
        layers = ", ".join(f"{layer} ({pooling})" for layer, pooling in zip(config.layers, config.pooling, strict=True))
    normalised = sum(config.l2_normalize)
    if normalised:
        layers += ", L2-normalised" if normalised == len(config.layers) else f", {normalised} L2-normalised"
    text = f"{classifier_words(config)} on {len(config.layers)} layer{'s' if len(config.layers) > 1 else ''} ({layers})"
    return text + (f", PCA to {config.pca_dims}" if config.pca_dims else "")


def scratch_words(config: ScratchConfig) -> str:
    blocks = f"a {config.blocks}-block CNN from scratch ({'-'.join(map(str, config.channels))} maps"
    blocks += f", {config.convs_per_block} {config.kernel_size}x{config.kernel_size} convs a block"
    blocks += ", batch norm" if config.batchnorm else ""
    parts = [blocks + f", {config.pool} pool)"]
    parts.append(_head(config.fc_layers, config.fc_width, False, config.dropout) + f" on the {config.head_pool} pool")
    parts.append(_optimizer(config.optimizer, config.lr, config.momentum, config.weight_decay))
    return "; ".join(parts + _finishing(config.batch_size, config.augment, config.label_smoothing))


def method(config: object) -> str:
    """The main choice a trial made, for grouping trials into the methods a reader compares."""
    if isinstance(config, FinetuneConfig):
        return finetune_method(config)
    if isinstance(config, FeaturesConfig):
        return CLASSIFIERS.get(config.classifier, config.classifier)
    return "small CNN from scratch"


def in_words(config: object, backbone: str | None = None) -> str:
    """The whole configuration, e.g. "logistic regression (C 0.0043) on 2 layers (block7, conv_head, ...)"."""
    if isinstance(config, FinetuneConfig):
        text = finetune_words(config)
    elif isinstance(config, FeaturesConfig):
        text = features_words(config)
    elif isinstance(config, ScratchConfig):
        text = scratch_words(config)
    else:
        raise TypeError(f"no words for a {type(config).__name__}")
    return f"{text} (on {backbone})" if backbone else text
