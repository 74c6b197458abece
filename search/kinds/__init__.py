"""Study kinds as plug-ins: one module per kind, registered by name; see search.kinds.base.

Adding a kind is one module that subclasses StudyKind, decorated with `register_kind`, imported here.
"""

from search.kinds import features as features
from search.kinds import finetune as finetune
from search.kinds import scratch as scratch
from search.kinds.base import KindInputs, ModelInputs, Part, Prepared, SourceTrial, StudyKind, TrainedModel
from search.kinds.registry import get_kind, kind_names, kind_of_config, register_kind

__all__ = [
    "KindInputs",
    "ModelInputs",
    "Part",
    "Prepared",
    "SourceTrial",
    "StudyKind",
    "TrainedModel",
    "get_kind",
    "kind_names",
    "kind_of_config",
    "register_kind",
]
