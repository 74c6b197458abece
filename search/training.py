"""What every trainer shares: settings, per-epoch metrics, the reporter protocol and the result."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

METRICS: dict[str, Literal["minimize", "maximize"]] = {"val_loss": "minimize", "val_accuracy": "maximize"}


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def value(self, metric: str) -> float:
        """The study's metric for this epoch."""
        return self.val_loss if metric == "val_loss" else self.val_accuracy


def better(candidate: float, incumbent: float, metric: str) -> bool:
    """Whether a value of `metric` beats another in the metric's direction."""
    return candidate < incumbent if METRICS[metric] == "minimize" else candidate > incumbent


def is_better(candidate: EpochMetrics, incumbent: EpochMetrics, metric: str) -> bool:
    """Whether `candidate` beats `incumbent` in the study's direction."""
    return better(candidate.value(metric), incumbent.value(metric), metric)


class Reporter(Protocol):
    """Told each epoch's metrics; answers True when the trial should stop (it was pruned)."""

    def report(self, epoch: int, metrics: EpochMetrics) -> bool: ...


class NullReporter:
    """A reporter that never stops a trial: for calling a trainer without a study."""

    def report(self, epoch: int, metrics: EpochMetrics) -> bool:
        return False


@dataclass(frozen=True)
class TrainSettings:
    """How long and where to train; the same for every trial of a study."""

    max_epochs: int
    patience: int  # epochs without improvement before early stopping
    device: torch.device
    seed: int
    metric: str = "val_loss"

    def autocast(self) -> torch.autocast | nullcontext[None]:
        """bfloat16 autocast on a CUDA device that supports it (no loss scaling needed); else fp32."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


@dataclass
class TrialResult:
    """How a trial ended, its best epoch by the study's metric, and its history."""

    status: str  # complete, pruned, diverged, out_of_memory
    best: EpochMetrics | None
    history: list[EpochMetrics]
    seconds: float
    trainable_params: int = 0
    total_params: int = 0
    reason: str = ""
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # class probabilities of the best epoch for the validation items, in dataset order: [n_val, classes]
    val_probabilities: np.ndarray | None = field(default=None, repr=False)
    estimator: object | None = field(default=None, repr=False)  # a fitted scikit-learn pipeline (features space)

    @classmethod
    def failed(cls, status: str, reason: str, started: float, history: list[EpochMetrics] | None = None) -> TrialResult:
        history = history or []
        return cls(status, None, history, time.perf_counter() - started, reason=reason)
