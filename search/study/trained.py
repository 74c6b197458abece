"""The trained model of a study's trial, rebuilt from its checkpoint and the study's record, ready to predict."""

from __future__ import annotations

from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.kinds import ModelInputs, StudyKind, TrainedModel, taking_source
from search.models.backbones import Backbone
from search.study.checkpoints import load_checkpoint
from search.study.record import StudyRecord, read_source_trial, record_of, storage_of
from search.study.trial_facts import TrialFacts

CPU = torch.device("cpu")


def recorded_backbone(record: StudyRecord, kind: StudyKind, name: str) -> Backbone:
    """The backbone `name` of the study, fed the pixels the study fed it."""
    spec = record.made
    backbone = kind.study_backbone(name, pretrained=spec.pretrained, weights_file=spec.weights)
    if record.resolved is None:
        return backbone
    return backbone.with_normalization(*record.resolved.normalization_of(name))


def load_trial_model(
    study: optuna.Study, trial: FrozenTrial, store: Any, *, device: torch.device = CPU
) -> TrainedModel:
    """The trained model of a finished trial that kept one (the study's best does)."""
    record = record_of(study)
    if record.resolved is None or record.data is None:
        raise UserError(f"study '{study.study_name}' holds no data record; it was not made by run_study.py")
    kind = record.kind()
    checkpoint = load_checkpoint(trial, kind, store, study_name=study.study_name)
    named = record.made.from_trial
    source = read_source_trial(named, storage_of(study), store) if named else None
    backbone = recorded_backbone(record, kind, record.backbone_of(trial))
    inputs = ModelInputs(
        backbone=taking_source(kind).source_backbone(source, backbone) if source else backbone,
        class_names=record.data.classes,
        image_size=record.resolved.image_size,
        device=device,
        source=source,
    )
    return kind.trained_model(TrialFacts.of(trial).config or {}, checkpoint, inputs)
