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

from search._lazy import lazy_exports

_EXPORTS = {
    "Backbone": "search.models.backbones",
    "create_backbone": "search.models.backbones",
    "list_backbones": "search.models.backbones",
    "register_backbone": "search.models.backbones",
    "FeaturesConfig": "search.training.configs",
    "FinetuneConfig": "search.training.configs",
    "SpaceContext": "search.training.configs",
    "EpochMetrics": "search.training.core",
    "NullReporter": "search.training.core",
    "Reporter": "search.training.core",
    "Status": "search.training.core",
    "TrainSettings": "search.training.core",
    "TrialResult": "search.training.core",
    "train_finetune": "search.kinds.finetune.trainer",
    "StudyAborted": "search.errors",
    "UserError": "search.errors",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)  # imported on first use: an ONNX prediction needs no torch
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
