"""A trial's configuration trained again on train + validation, then scored once on the test split.

scikit-learn's `GridSearchCV(refit=True)` refits the winner on all labelled data; here the labelled
data is the study's train and validation splits. The refit trains for the epochs the trial needed
(its best epoch; a features trial fits once) and keeps its last epoch: nothing is left to choose an
epoch on. The trainer's held-out split is the test split, so the score it reports once it ends is
the refit model's test score; nothing reads it before then. The study records it beside the trial's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from search.data.sources import TEST, TRAIN, VAL
from search.errors import UserError
from search.kinds import ModelInputs, TrainedModel
from search.study.evaluation import evaluate_on_test, stored_test_part
from search.study.record import RESOLVED_ATTR, SPEC_ATTR, record_of
from search.study.scores import Classification, classify
from search.study.spec import StudySpec
from search.study.trial_facts import TrialFacts
from search.training.core import NullReporter, Status

REFIT_ATTR = "refit"  # study user attr: the last refit and its test score


@dataclass(frozen=True)
class RefitSummary:
    """What a refit scored on test beside the trial's own model, stored on the study for the report."""

    trial: int
    epochs: int
    train_images: int  # train + validation
    test_images: int
    test_accuracy: float
    trial_test_accuracy: float | None  # the trial's own model (trained on train only), when it was scored

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RefitSummary:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})

    def line(self) -> str:
        own = "n/a" if self.trial_test_accuracy is None else f"{self.trial_test_accuracy:.1%}"
        return (
            f"trial {self.trial} refit on {self.train_images} train + validation images for {self.epochs} "
            f"epoch{'s' if self.epochs != 1 else ''}: test {self.test_accuracy:.1%} (trained on train only: {own})"
        )


def refit_split(split: np.ndarray) -> np.ndarray:
    """Validation items train too; the test items become the held-out split the trainer scores."""
    refit = split.copy()
    refit[split == VAL] = TRAIN
    refit[split == TEST] = VAL
    return refit


class Refitter:
    """A study's data and caches prepared once (as the runner prepares them), to refit any of its trials."""

    def __init__(self, study: optuna.Study, *, storage: str, device: str) -> None:
        from search.study.runner import prepare  # the runner imports much of this package: only when refitting

        self.study = study
        self.record = record_of(study)
        if self.record.made.from_trial:
            raise UserError(
                f"study '{study.study_name}' stands on trial {self.record.made.from_trial}; a refit of such a study "
                "is not built yet: leave out --refit"
            )
        spec: StudySpec = dataclasses.replace(  # trials=1: the first queued trial exists already, nothing is added
            self.record.made, storage=storage, trials=1, warm_start=(), time_budget=None, device=device, workers=1
        )
        self.seed = spec.seed
        recorded = {key: study.user_attrs[key] for key in (SPEC_ATTR, RESOLVED_ATTR)}
        self.prepared = prepare(spec)
        for key, value in recorded.items():  # prepare() records the spec it ran: the study's own stays
            study.set_user_attr(key, value)

    def refit(self, trial: FrozenTrial) -> tuple[TrainedModel, Classification, np.ndarray]:
        """The trial's configuration trained on train + validation: its model, test scores and test probabilities."""
        facts = TrialFacts.of(trial)
        if facts.config is None or facts.best_epoch is None:
            raise UserError(
                f"trial {trial.number} of study '{self.study.study_name}' records no configuration to refit"
            )
        resources = self.prepared.setups[self.record.backbone_of(trial)].resources
        data = resources.prepared.data
        split = refit_split(data.split)
        if not (split == VAL).any():
            raise UserError(f"study '{self.study.study_name}' has no test images; a refit could not be scored")
        settings = dataclasses.replace(
            resources.settings,
            max_epochs=facts.best_epoch,
            patience=facts.best_epoch + 1,
            seed=self.seed + trial.number,
            deadline=None,
            keep_last=True,
        )
        kind = resources.kind
        refit_prepared = dataclasses.replace(resources.prepared, data=dataclasses.replace(data, split=split))
        result = kind.train(kind.config_of(facts.config), refit_prepared, resources.backbone, NullReporter(), settings)
        if result.status is not Status.COMPLETE or result.model is None or result.val_probabilities is None:
            reason = result.reason or result.status.value
            raise UserError(f"the refit of trial {trial.number} did not complete ({reason})")
        record = self.record
        assert record.data is not None and record.resolved is not None, "prepare() recorded the setup"
        inputs = ModelInputs(
            backbone=resources.backbone,
            class_names=record.data.classes,
            image_size=record.resolved.image_size,
            device=settings.device,
        )
        model = kind.trained_model(facts.config, result.model, inputs)
        labels = refit_prepared.data.labels_of(VAL)
        return model, classify(labels, result.val_probabilities, record.data.classes), result.val_probabilities

    @property
    def device(self) -> torch.device:
        return self.prepared.first.resources.settings.device

    @property
    def train_images(self) -> int:
        data = self.prepared.first.resources.prepared.data
        return int(((data.split == TRAIN) | (data.split == VAL)).sum())


def refit_trial(
    study: optuna.Study,
    trial: FrozenTrial,
    store: FileSystemArtifactStore,
    *,
    storage: str,
    device: str,
) -> tuple[TrainedModel, RefitSummary]:
    """Train the trial's configuration again on train + validation, score it once on test, record both."""
    refitter = Refitter(study, storage=storage, device=device)
    model, scores, _ = refitter.refit(trial)
    tested = evaluate_on_test(study, store, device=refitter.device, test_part=lambda: stored_test_part(study))
    own = tested["accuracy"] if tested and tested.get("trial") == trial.number else None
    summary = RefitSummary(
        trial=trial.number,
        epochs=TrialFacts.of(trial).best_epoch or 0,
        train_images=refitter.train_images,
        test_images=sum(c.support for c in scores.per_class),
        test_accuracy=scores.accuracy,
        trial_test_accuracy=own,
    )
    study.set_user_attr(REFIT_ATTR, summary.to_record() | {"test": scores.to_record()})
    return model, summary


def stored_refit(study: optuna.Study) -> RefitSummary | None:
    """The refit last made of one of the study's trials, as `refit_trial` stored it."""
    record = study.user_attrs.get(REFIT_ATTR)
    return RefitSummary.from_record(record) if record else None
