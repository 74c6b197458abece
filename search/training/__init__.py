"""What every trainer shares: configs, settings, the reporter, what a trial returns, and the device.

The trainers themselves live with their kind (search.kinds.finetune.trainer, search.kinds.features.trainer),
as plain functions of (config, data, ..., reporter, settings).
"""

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
]
