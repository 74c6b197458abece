"""Study kinds as plug-ins: one package per kind (its kind and its trainer), registered by name; see
search.kinds.base.

Adding a kind is one package whose StudyKind subclass is decorated with `register_kind`, imported here.
What a kind can do beyond the core (stand on another trial's network, give its own network to
another study) is a capability protocol it meets by having the methods (TakesSource, GivesNetwork, BuildsOwnNetwork, SavesModels, ExportsOnnx, MeasuresCosts).
"""

from search.kinds import features as features
from search.kinds import finetune as finetune
from search.kinds import scratch as scratch
from search.kinds.base import (
    BuildsOwnNetwork,
    ExportsOnnx,
    GivesNetwork,
    KindInputs,
    MeasuresCosts,
    ModelInputs,
    Part,
    Prepared,
    SavesModels,
    SourceTrial,
    StudyKind,
    TakesSource,
    TrainedModel,
    exporting_onnx,
    giving_network,
    saving_models,
    stands_on_backbone,
    taking_source,
)
from search.kinds.registry import get_kind, kind_names, kind_of_config, register_kind

__all__ = [
    "BuildsOwnNetwork",
    "ExportsOnnx",
    "GivesNetwork",
    "KindInputs",
    "MeasuresCosts",
    "ModelInputs",
    "Part",
    "Prepared",
    "SavesModels",
    "SourceTrial",
    "StudyKind",
    "TakesSource",
    "TrainedModel",
    "exporting_onnx",
    "get_kind",
    "giving_network",
    "kind_names",
    "kind_of_config",
    "register_kind",
    "saving_models",
    "stands_on_backbone",
    "taking_source",
]
