"""Frozen trial configurations and the context a search space proposes them in."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from search.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTATIONS = ("none", "light", "strong")

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class SpaceContext:
    """What a search space may depend on: the backbone's cut points and the data's size."""

    backbone: str
    cut_points: tuple[str, ...]
    max_unfreeze: dict[str, int]  # per cut point, how many stages can be unfrozen back from it
    num_classes: int
    train_size: int
    device: str  # "cpu" or "cuda": spaces may keep CPU trials cheaper


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning trial: where to cut, the head, the optimiser, unfreezing and augmentation."""

    cut: str
    head_width: int
    head_depth: int  # hidden layers before the classifier
    head_batchnorm: bool
    head_dropout: float
    weight_decay: float  # L2 on every trained weight
    optimizer: str
    lr: float  # head learning rate
    momentum: float  # SGD only; 0 elsewhere
    batch_size: int
    unfreeze_blocks: int  # backbone stages trained, counting back from the cut; 0 = frozen backbone
    backbone_lr_factor: float  # backbone lr = lr * factor, lower so pretrained weights move slowly
    head_only_epochs: int  # staged unfreezing: epochs with the backbone frozen before it trains
    augment: str

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not '{self.optimizer}'")
        if self.augment not in AUGMENTATIONS:
            raise UserError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not '{self.augment}'")
        checks = {
            "head_width": self.head_width >= 1,
            "head_depth": 1 <= self.head_depth <= 3,
            "head_dropout": 0.0 <= self.head_dropout < 1.0,
            "weight_decay": self.weight_decay >= 0.0,
            "lr": self.lr > 0.0 and math.isfinite(self.lr),
            "momentum": 0.0 <= self.momentum < 1.0,
            "batch_size": self.batch_size >= 2,
            "unfreeze_blocks": self.unfreeze_blocks >= 0,
            "backbone_lr_factor": 0.0 < self.backbone_lr_factor <= 1.0,
            "head_only_epochs": self.head_only_epochs >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"finetune config has out-of-range {', '.join(bad)}: {self}")


def config_from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Build a config from a mapping; unknown keys and wrong types are errors that name them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(fields)}")
    missing = sorted(set(fields) - set(values))
    if missing:
        raise UserError(f"{cls.__name__} is missing {missing}")
    hints: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool, "str": str}
    for name, value in values.items():
        expected = hints.get(str(fields[name].type))
        if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            raise UserError(f"{cls.__name__}.{name} must be {fields[name].type}, got {value!r}")
    return cls(**values)
