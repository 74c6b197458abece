"""`python -m search ensemble`: a greedy ensemble of a study's best trials, scored once on the test split.

Ensemble selection (Caruana et al., ICML 2004), as AutoGluon's weighted ensemble does it: start from
nothing, add with replacement the trial whose probabilities, averaged in, give the best validation
accuracy (the lower log loss breaks ties), and keep the best ensemble met on the way. It starts with
the best single trial and only adds a member that helps on validation, so it is never below that trial
there; the test split, which neither the search nor the selection saw, says whether it generalises.
The candidates are the trials that kept their model (search.study.checkpoints.KEPT_MODELS).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.kinds import TrainedModel
from search.progress import progress_bar
from search.results.ensemble_model import EnsembleModel
from search.study.checkpoints import CHECKPOINT_ATTR, load_val_predictions
from search.study.evaluation import SCORE_BATCH, evaluate_on_test, stored_test_part
from search.study.record import best_completed, completed_trials
from search.study.refit import Refitter
from search.study.trained import load_trial_model
from search.study.trial_facts import TrialFacts, feasible

ENSEMBLE_ATTR = "ensemble"  # study user attr: the last ensemble built and how it scored
DEFAULT_SIZE = 5  # at most this many distinct trials
ROUNDS = 25  # selections with replacement: weights in steps of 1/25 at the finest
TIE = 1e-9  # log losses closer than this are the same ensemble's, up to rounding


@dataclass(frozen=True)
class EnsembleSummary:
    """What an ensemble scored beside the study's best single trial, stored on the study for the report."""

    trials: list[int]
    weights: list[float]
    val_accuracy: float
    val_loss: float
    test_accuracy: float | None
    test_images: int
    best_trial: int
    best_val_accuracy: float | None
    best_test_accuracy: float | None
    latency_ms_b1: float | None  # the members one after another, per image at batch 1
    size_bytes: int | None
    refit: bool = False  # its members trained again on train + validation

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EnsembleSummary:
        return cls(**record)

    def line(self) -> str:
        """`ensemble of K trials: val X%, test Y% (best trial #N: val A%, test B%)`."""

        def percent(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1%}"

        count = len(self.trials)
        refit = " (refit on train + validation)" if self.refit else ""
        return (
            f"ensemble of {count} trial{'s' if count != 1 else ''}{refit}: val {percent(self.val_accuracy)}, "
            f"test {percent(self.test_accuracy)} (best trial #{self.best_trial}: "
            f"val {percent(self.best_val_accuracy)}, test {percent(self.best_test_accuracy)})"
        )


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def scored(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, -log loss): larger is better in both, compared in that order."""
    return float((probabilities.argmax(1) == labels).mean()), -log_loss(probabilities, labels)


def select(probabilities: list[np.ndarray], labels: np.ndarray, *, size: int, rounds: int = ROUNDS) -> list[int]:
    """How many times each candidate is picked (Caruana's selection with replacement); at most `size` distinct.

    The best ensemble met along the way is returned, so adding members never makes validation worse.
    """
    counts = [0] * len(probabilities)
    total = np.zeros_like(probabilities[0], dtype=np.float64)
    best: tuple[tuple[float, float], list[int]] | None = None
    for step in range(1, rounds + 1):
        distinct = sum(c > 0 for c in counts)
        allowed = [i for i in range(len(probabilities)) if counts[i] or distinct < size]
        score, pick = max((scored((total + probabilities[i]) / step, labels), -i) for i in allowed)
        counts[-pick] += 1
        total += probabilities[-pick]
        if best is None or score[0] > best[0][0] or (score[0] == best[0][0] and score[1] > best[0][1] + TIE):
            best = (score, list(counts))
    assert best is not None, "rounds >= 1"
    common = math.gcd(*best[1])
    return [count // common for count in best[1]]  # [18, 0] is [1, 0]: one trial, weight 1


@dataclass(frozen=True)
class Candidate:
    trial: FrozenTrial
    probabilities: np.ndarray
    labels: np.ndarray


def candidates(study: optuna.Study, store: FileSystemArtifactStore) -> list[Candidate]:
    """The feasible complete trials that kept a model and their validation probabilities, best first."""
    found = []
    for trial in completed_trials(study):
        if not feasible(trial) or CHECKPOINT_ATTR not in trial.user_attrs:
            continue
        saved = load_val_predictions(trial, store)
        if saved is not None:
            found.append(Candidate(trial, *saved))
    if not found:
        raise UserError(
            f"no trial of study '{study.study_name}' kept its model and validation probabilities; "
            "run it (or a new study) with this version, then build the ensemble"
        )
    return found


def build_ensemble(
    study: optuna.Study,
    store: FileSystemArtifactStore,
    *,
    size: int = DEFAULT_SIZE,
    device: torch.device,
    refitter: Refitter | None = None,
) -> tuple[EnsembleModel, EnsembleSummary]:
    """Select the ensemble on validation, rebuild its members, score it and the best trial once on test.

    With a `refitter`, each member is its configuration trained again on train + validation
    (search.study.refit); the weights are still those the validation split chose.
    """
    if size < 1:
        raise UserError(f"--size {size}: an ensemble needs at least one trial; pass --size 1 or more")
    found = candidates(study, store)
    labels = found[0].labels
    counts = select([c.probabilities for c in found], labels, size=size)
    chosen = [(c, n) for c, n in zip(found, counts, strict=True) if n]
    weights = [n / sum(counts) for _, n in chosen]
    val_probabilities = weighted([c.probabilities for c, _ in chosen], weights)
    images, test_labels = stored_test_part(study)
    members, refit_test = rebuilt_members(study, store, [c.trial for c, _ in chosen], device, refitter)
    model = EnsembleModel(
        members, weights, [c.trial.number for c, _ in chosen], members[0].class_names, members[0].image_size
    )
    test_accuracy = None
    if len(test_labels):
        test_probabilities = (
            weighted(refit_test, weights)  # the refit trainers scored the test split once each
            if refit_test is not None
            else predict_in_batches(model, images, f"scoring the ensemble on {len(test_labels)} test images")
        )
        test_accuracy = scored(test_probabilities, test_labels.numpy())[0]
    best = best_completed(study)
    assert best is not None, "a candidate is a feasible complete trial"
    tested = evaluate_on_test(study, store, device=device, test_part=lambda: (images, test_labels))
    facts = [TrialFacts.of(c.trial) for c, _ in chosen]
    summary = EnsembleSummary(
        trials=model.trials,
        weights=[round(w, 4) for w in weights],
        val_accuracy=scored(val_probabilities, labels)[0],
        val_loss=log_loss(val_probabilities, labels),
        test_accuracy=test_accuracy,
        test_images=len(test_labels),
        best_trial=best.number,
        best_val_accuracy=TrialFacts.of(best).val_accuracy,
        best_test_accuracy=tested["accuracy"] if tested else None,
        latency_ms_b1=summed([f.latency_ms_b1 for f in facts]),
        size_bytes=summed([f.size_bytes for f in facts]),
        refit=refitter is not None,
    )
    study.set_user_attr(ENSEMBLE_ATTR, summary.to_record())
    return model, summary


def weighted(probabilities: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return np.sum([w * p for w, p in zip(weights, probabilities, strict=True)], axis=0)


def rebuilt_members(
    study: optuna.Study,
    store: FileSystemArtifactStore,
    trials: list[FrozenTrial],
    device: torch.device,
    refitter: Refitter | None,
) -> tuple[list[TrainedModel], list[np.ndarray] | None]:
    """The members' models as their trials kept them; or refit, with each refit's test probabilities."""
    if refitter is None:
        return [load_trial_model(study, trial, store, device=device) for trial in trials], None
    refits = [refitter.refit(trial) for trial in trials]
    return [model for model, _, _ in refits], [test for _, _, test in refits]


def summed(values: list[Any]) -> Any:
    """The members' costs added up; None when any member was not measured."""
    return None if any(v is None for v in values) else sum(values)


def predict_in_batches(model: EnsembleModel, images: torch.Tensor, description: str) -> np.ndarray:
    with progress_bar(description, len(images)) as advance:
        chunks = []
        for batch in images.split(SCORE_BATCH):
            chunks.append(model.predict_proba(batch))
            advance(len(batch))
    return np.concatenate(chunks)


def stored_ensemble(study: optuna.Study) -> EnsembleSummary | None:
    """The ensemble last built for the study, as `build_ensemble` stored it."""
    record = study.user_attrs.get(ENSEMBLE_ATTR)
    return EnsembleSummary.from_record(record) if record else None
