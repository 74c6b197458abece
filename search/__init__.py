"""Hyperparameter search for transfer learning of image classifiers; `run_study.py` is its command line.

The folders are layers, each importing only those below it:
    cli/       command lines: run_study.py's (run), `python -m search` (results), the console, the --workers launcher
    results/   reading finished studies: report, dashboard, export bundles, predict, scores and plots
    study/     running one: spec, typed record, storage, runner, objective, workers, checkpoints, test evaluation
    kinds/     study kinds as plug-ins (finetune, features): data preparation, trainer, model, bundle per kind
    training/  trainers as plain functions behind a Reporter, their configs and shared results
    models/    backbones as stages, heads, the frozen-prefix cache
    data/      image sources, decoding and splits, augmentation, pixels, input size, the feature cache

Programmatic use mirrors the CLI: build a StudySpec, then `search.study.runner.prepare` and `run` it.
A trainer can also be called on its own with any Reporter.
"""

from search.errors import StudyAborted, UserError
from search.models.backbones import Backbone, create_backbone, list_backbones, register_backbone
from search.training.configs import FeaturesConfig, FinetuneConfig, SpaceContext
from search.training.core import EpochMetrics, NullReporter, Reporter, Status, TrainSettings, TrialResult
from search.training.finetune import train_finetune

__all__ = [
    "Backbone",
    "EpochMetrics",
    "FeaturesConfig",
    "FinetuneConfig",
    "NullReporter",
    "Reporter",
    "SpaceContext",
    "Status",
    "StudyAborted",
    "TrainSettings",
    "TrialResult",
    "UserError",
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "train_finetune",
]
