"""What a trial stores about itself, typed: the attribute names defined once, one writer, one reader.

The objective writes a trial's results as Optuna user attributes (so the dashboard shows them);
the console, report, costs and comparison read them back through `TrialFacts.of`, never by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from optuna.trial import FrozenTrial

CONFIG = "config"  # the trial's resolved config (the space's dataclass as a dict)
STATUS = "status"
EPOCHS_RUN = "epochs_run"
SECONDS = "seconds"  # the trial's training time
TRAINABLE_PARAMS = "trainable_params"
TOTAL_PARAMS = "total_params"
HISTORY = "history"  # one dict per epoch (search.training.core.EpochMetrics)
BEST_EPOCH = "best_epoch"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
VAL_MACRO_F1 = "val_macro_f1"
PARAMS = "params"  # the model's numbers (network and fitted pipeline), as exported
SIZE_BYTES = "size_bytes"  # what the exported model weighs
LATENCY_MS_B1 = "latency_ms_b1"  # per image at batch 1 on the study's device
LATENCY_MS_B64 = "latency_ms_b64"  # per image at batch 64
STOP_REASON = "stop_reason"  # why a complete trial ended before --max-epochs (the time budget)
PRUNE_REASON = "prune_reason"
FAIL_REASON = "fail_reason"  # why it failed, on its console line and in the dashboard


def objective_value(trial: FrozenTrial) -> float | None:
    """The study's metric for the trial: its only value, or its first in a Pareto study (the second is latency)."""
    return trial.values[0] if trial.values else None


def feasible(trial: FrozenTrial) -> bool:
    """Whether the trial meets the study's deployment constraints (all of them zero or less; none: it does)."""
    return all(value <= 0.0 for value in trial.constraints.values())


@dataclass(frozen=True)
class TrialFacts:
    """A trial's stored results; None (or empty) for what it did not reach (a failed trial has no accuracy)."""

    config: dict[str, Any] | None = None
    status: str | None = None
    epochs_run: int | None = None
    seconds: float | None = None
    best_epoch: int | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    params: int | None = None
    size_bytes: int | None = None
    latency_ms_b1: float | None = None
    latency_ms_b64: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    prune_reason: str | None = None
    fail_reason: str | None = None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialFacts:
        attrs = trial.user_attrs
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})

    @property
    def timed(self) -> bool:
        """Whether the trial has both an accuracy and a latency (its model was timed)."""
        return self.val_accuracy is not None and self.latency_ms_b1 is not None
