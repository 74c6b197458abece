"""The engine: data, backbones, training, the study runner. `run_study.py` is its command line.

Programmatic use mirrors the CLI: build a StudySpec, then `search.runner.prepare` it (storage,
data, backbone, caches) and `search.runner.run` it (kept out of this module: the runner imports
the spaces, which import this package). A trainer can also be called on its own with any Reporter.
"""

from search.backbones import Backbone, create_backbone, list_backbones, register_backbone
from search.configs import FinetuneConfig, SpaceContext
from search.errors import StudyAborted, UserError
from search.finetune_trainer import train_finetune
from search.spec import StudySpec
from search.training import EpochMetrics, NullReporter, Reporter, TrainSettings, TrialResult

__all__ = [
    "Backbone",
    "EpochMetrics",
    "FinetuneConfig",
    "NullReporter",
    "Reporter",
    "SpaceContext",
    "StudyAborted",
    "StudySpec",
    "TrainSettings",
    "TrialResult",
    "UserError",
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "train_finetune",
]
