"""Trainers as plain functions of (config, data, ..., reporter, settings), their configs and what they return."""

from search.training.configs import FeaturesConfig, FinetuneConfig, SpaceContext, config_from_dict
from search.training.core import (
    METRICS,
    EpochMetrics,
    NullReporter,
    Reporter,
    Status,
    TrainSettings,
    TrialResult,
    resolve_device,
)
from search.training.features import train_features
from search.training.finetune import train_finetune

__all__ = [
    "METRICS",
    "EpochMetrics",
    "FeaturesConfig",
    "FinetuneConfig",
    "NullReporter",
    "Reporter",
    "SpaceContext",
    "Status",
    "TrainSettings",
    "TrialResult",
    "config_from_dict",
    "resolve_device",
    "train_features",
    "train_finetune",
]
