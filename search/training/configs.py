"""Frozen trial configurations and the context a search space proposes them in."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from search.errors import UserError
from search.models.scratch import ConvBlocks

OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTATIONS = ("none", "light", "strong", "photo")
POOLINGS = ("avg", "max", "both")
HEAD_POOLS = ("avg", "flatten")  # global average, or the flattened 4x4 grid (Keras' Flatten on small images)
CONV_POOLS = ("max", "avg")
CLASSIFIERS = ("rf", "svm", "logreg", "sgd")  # sgd: a logistic regression by SGD, for data too big for the rest
SVM_KERNELS = ("rbf", "linear", "poly")
RF_MAX_FEATURES = ("sqrt", "log2", "0.2")

BACKBONE_PARAM = "backbone"  # the trial parameter of a study that searches several backbones
ConfigT = TypeVar("ConfigT")


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters under their config fields' names: `cut@vgg16` -> `cut`, `lr@adam` -> `lr`."""
    return {name.split("@", 1)[0]: value for name, value in params.items()}


@dataclass(frozen=True)
class SpaceContext:
    """What a search space may depend on: the backbone's cut points, the data's size, what a trial may cost."""

    backbone: str
    cut_points: tuple[str, ...]
    # per cut point, how many stages a trial may unfreeze back from it: what the device affords (search.study.planning)
    max_unfreeze: dict[str, int]
    num_classes: int
    train_size: int
    device: str  # "cpu" or "cuda"
    feature_layers: tuple[str, ...] = ()  # layers the features space may tap, in forward order
    # per cut point, the deepest unfreezing at which augmented epochs fit a trial's time (-1: none); absent: any
    augment_up_to: dict[str, int] = dataclasses.field(default_factory=dict)
    # per cut point, how many stages there are up to it (re-initialising trains them all)
    stages: dict[str, int] = dataclasses.field(default_factory=dict)
    image_size: int = 224  # what the trials see
    transferred: bool = (
        False  # the backbone is a trained trial's network (--from-trial): its stages may be re-initialised
    )
    searched: tuple[str, ...] = ()  # every backbone of a study that searches several (this one among them)

    def own(self, name: str) -> str:
        """A parameter's name on this backbone: suffixed `@backbone` where the study searches several.

        Cut points and layers differ between backbones, and Optuna refuses a categorical parameter
        whose choices change; one name per backbone also keeps what the sampler learns of each apart.
        """
        return f"{name}@{self.backbone}" if len(self.searched) > 1 else name

    def augments(self, cut: str, unfreeze: int) -> bool:
        """Whether a trial cut at `cut` training `unfreeze` stages may augment its images within its time."""
        return unfreeze <= self.augment_up_to.get(cut, unfreeze)


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning trial: where to cut, the head, the optimiser, unfreezing and augmentation."""

    cut: str
    head_width: int
    head_depth: int  # hidden layers before the classifier; 0 = a linear classifier on the pooled features
    head_batchnorm: bool
    head_dropout: float  # before each linear layer of the head
    weight_decay: float  # L2 on every trained weight
    optimizer: str
    lr: float  # head learning rate at the peak of the schedule (after warm-up, before the cosine decay)
    momentum: float  # SGD only; 0 elsewhere
    batch_size: int
    unfreeze_blocks: int  # backbone stages trained, counting back from the cut; 0 = frozen backbone
    backbone_lr_factor: float  # backbone lr = lr * factor, lower so pretrained weights move slowly
    head_only_epochs: int  # LP-FT: passes fitting the head on cached frozen features before the stages train
    augment: str
    layer_decay: float = 1.0  # each unfrozen stage further back from the cut: lr x this again (timm's --layer-decay)
    label_smoothing: float = 0.0  # of the training loss only; validation loss stays plain cross-entropy
    head_pool: str = "avg"
    # the first k stages start from random weights again; then every stage up to the cut trains
    reinit_blocks: int = 0
    # False: the unfrozen stages' batch norm keeps its ImageNet statistics (Keras' fine-tuning advice); batches of
    # 16-32 photos re-estimate them badly (docs/real-photos.md measures both on flowers-mini)
    train_bn: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not '{self.optimizer}'")
        if self.augment not in AUGMENTATIONS:
            raise UserError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not '{self.augment}'")
        if self.head_pool not in HEAD_POOLS:
            raise UserError(f"head_pool must be one of {', '.join(HEAD_POOLS)}, not '{self.head_pool}'")
        checks = {
            "head_width": self.head_width >= 1,
            "head_depth": 0 <= self.head_depth <= 3,
            "head_dropout": 0.0 <= self.head_dropout < 1.0,
            "weight_decay": self.weight_decay >= 0.0,
            "lr": self.lr > 0.0 and math.isfinite(self.lr),
            "momentum": 0.0 <= self.momentum < 1.0,
            "batch_size": self.batch_size >= 2,
            "unfreeze_blocks": self.unfreeze_blocks >= 0,
            "backbone_lr_factor": 0.0 < self.backbone_lr_factor <= 1.0,
            "head_only_epochs": self.head_only_epochs >= 0,
            "layer_decay": 0.0 < self.layer_decay <= 1.0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "reinit_blocks": self.reinit_blocks >= 0,
            "train_bn": self.train_bn or self.reinit_blocks == 0,  # re-initialised stages have no statistics to keep
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"finetune config has out-of-range {', '.join(bad)}: {self}")


@dataclass(frozen=True)
class ScratchConfig:
    """One small CNN trained from random weights: conv blocks, a pooled or flattened head, its optimiser.

    Block i is `convs_per_block` x (conv [BN] ReLU) with channels[i] maps, then a 2x2 pool.
    """

    channels: tuple[int, ...]  # feature maps per block; its length is the number of blocks
    convs_per_block: int
    kernel_size: int
    batchnorm: bool
    pool: str  # max or avg, after each block
    head_pool: str  # avg (global) or flatten
    fc_layers: int  # hidden fully connected layers before the classifier
    fc_width: int
    dropout: float
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    augment: str
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        choices = {
            "pool": (self.pool, CONV_POOLS),
            "head_pool": (self.head_pool, HEAD_POOLS),
            "optimizer": (self.optimizer, OPTIMIZERS),
            "augment": (self.augment, AUGMENTATIONS),
        }
        problems = [f"{k} must be one of {', '.join(ok)}, not '{v}'" for k, (v, ok) in choices.items() if v not in ok]
        ranges = {
            "channels": 1 <= len(self.channels) <= 6 and all(c >= 1 for c in self.channels),
            "convs_per_block": 1 <= self.convs_per_block <= 3,
            "kernel_size": self.kernel_size in (1, 3, 5, 7),
            "fc_layers": 0 <= self.fc_layers <= 3,
            "fc_width": self.fc_width >= 1,
            "dropout": 0.0 <= self.dropout < 1.0,
            "lr": self.lr > 0.0 and math.isfinite(self.lr),
            "momentum": 0.0 <= self.momentum < 1.0,
            "weight_decay": self.weight_decay >= 0.0,
            "batch_size": self.batch_size >= 2,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
        }
        problems += [f"{name} is out of range" for name, ok in ranges.items() if not ok]
        if problems:
            raise UserError(f"scratch config: {'; '.join(problems)}")

    @property
    def blocks(self) -> int:
        return len(self.channels)

    @property
    def architecture(self) -> ConvBlocks:
        return ConvBlocks(self.channels, self.convs_per_block, self.kernel_size, self.batchnorm, self.pool)

    def as_finetune(self) -> FinetuneConfig:
        """The same trial as the trainer runs it: every block trained, at one learning rate, under a new head."""
        return FinetuneConfig(
            cut=f"block{self.blocks}",
            head_width=self.fc_width,
            head_depth=self.fc_layers,
            head_batchnorm=False,
            head_dropout=self.dropout,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            batch_size=self.batch_size,
            unfreeze_blocks=self.blocks,
            backbone_lr_factor=1.0,
            head_only_epochs=0,
            augment=self.augment,
            label_smoothing=self.label_smoothing,
            head_pool=self.head_pool,
        )


@dataclass(frozen=True)
class FeaturesConfig:
    """One feature-extraction trial: which pooled layers, their normalisation, PCA, and a classical classifier.

    Classifier parameters of the other branches keep their defaults and are ignored.
    """

    layers: tuple[str, ...]
    pooling: tuple[str, ...]  # per layer: avg, max or both (concatenated)
    l2_normalize: tuple[bool, ...]  # per layer: scale each image's vector of that layer to unit length
    pca_dims: int  # 0: no PCA
    classifier: str  # rf, svm, logreg or sgd
    rf_n_estimators: int = 100
    rf_min_samples_leaf: int = 1
    rf_max_features: str = "sqrt"
    rf_balanced: bool = False  # class_weight="balanced"
    rf_max_samples: float = 1.0  # the fraction of the training items each tree draws: bounds a tree's cost on big data
    svm_c: float = 1.0
    svm_kernel: str = "rbf"
    svm_gamma: float = 0.0  # 0: scikit-learn's "scale"
    logreg_c: float = 1.0
    sgd_alpha: float = 1e-4  # the L2 penalty of the SGD-trained logistic regression

    def __post_init__(self) -> None:
        problems = []
        if not self.layers or len(set(self.layers)) != len(self.layers):
            problems.append("layers must be a non-empty list of distinct layer names")
        if len(self.pooling) != len(self.layers) or len(self.l2_normalize) != len(self.layers):
            problems.append("pooling and l2_normalize need one entry per layer")
        if any(p not in POOLINGS for p in self.pooling):
            problems.append(f"pooling entries must be one of {', '.join(POOLINGS)}")
        if self.classifier not in CLASSIFIERS:
            problems.append(f"classifier must be one of {', '.join(CLASSIFIERS)}, not '{self.classifier}'")
        if self.svm_kernel not in SVM_KERNELS:
            problems.append(f"svm_kernel must be one of {', '.join(SVM_KERNELS)}")
        if self.rf_max_features not in RF_MAX_FEATURES:
            problems.append(f"rf_max_features must be one of {', '.join(RF_MAX_FEATURES)}")
        ranges = {
            "pca_dims": self.pca_dims >= 0,
            "rf_n_estimators": self.rf_n_estimators >= 1,
            "rf_min_samples_leaf": self.rf_min_samples_leaf >= 1,
            "svm_c": self.svm_c > 0.0,
            "svm_gamma": self.svm_gamma >= 0.0,
            "logreg_c": self.logreg_c > 0.0,
            "rf_max_samples": 0.0 < self.rf_max_samples <= 1.0,
            "sgd_alpha": self.sgd_alpha > 0.0,
        }
        problems += [f"{name} is out of range" for name, ok in ranges.items() if not ok]
        if problems:
            raise UserError(f"features config: {'; '.join(problems)}")


def config_from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Build a config from a mapping; unknown keys and wrong types are errors that name them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(fields)}")
    required = {name for name, f in fields.items() if f.default is dataclasses.MISSING}
    missing = sorted(required - set(values))  # fields added later keep their defaults: older trials still load
    if missing:
        raise UserError(f"{cls.__name__} is missing {missing}")
    hints: dict[str, type | tuple[type, ...]] = {
        "int": int,
        "float": (int, float),
        "bool": bool,
        "str": str,
        "tuple[str, ...]": (tuple, list),
        "tuple[bool, ...]": (tuple, list),
        "tuple[int, ...]": (tuple, list),
    }
    for name, value in values.items():
        expected = hints.get(str(fields[name].type))
        if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            raise UserError(f"{cls.__name__}.{name} must be {fields[name].type}, got {value!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}  # JSON stores tuples as lists
    return cls(**values)
