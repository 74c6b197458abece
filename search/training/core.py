"""What every trainer shares: settings, per-epoch metrics, the reporter protocol, the best epoch and the result."""

from __future__ import annotations

import enum
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from search.errors import UserError

# The study's objective: what each trial reports every epoch and in which direction it is better.
METRICS: dict[str, Literal["minimize", "maximize"]] = {"val_loss": "minimize", "val_accuracy": "maximize"}
# Accuracy by default: what users read and compare. A study that picks by loss passes over a trial
# with higher accuracy whose label smoothing raised its plain loss, and ended below its own probe
# (bench/RESULTS.md, "Choosing the best trial by accuracy"); ties go to the lower loss (better_epoch).
DEFAULT_METRIC = "val_accuracy"


def resolve_device(requested: str) -> torch.device:
    """`auto` is the first CUDA GPU when there is one, else the CPU; a GPU asked for must exist."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {requested}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0..)")
    return device


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


def better_epoch(candidate: EpochMetrics, incumbent: EpochMetrics, metric: str) -> bool:
    """Whether an epoch beats another by the study's metric; equal accuracy goes to the lower loss.

    Accuracy on a few hundred images moves in steps of one image and plateaus while the loss still
    falls: without the tie-break, early stopping would end a trial that is still improving.
    """
    ours, theirs = candidate.value(metric), incumbent.value(metric)
    if metric == "val_accuracy" and ours == theirs:
        return candidate.val_loss < incumbent.val_loss
    return better(ours, theirs, metric)


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
    metric: str = DEFAULT_METRIC
    deadline: float | None = None  # time.monotonic() by which a trial ends at its best epoch so far (--time-budget)
    keep_last: bool = False  # a refit: the last epoch is the model, whatever its held-out split says

    def best_epoch(self) -> BestEpoch:
        """The tracker a trainer keeps its best (with keep_last: its latest) epoch in."""
        return BestEpoch(self.metric, keep_last=self.keep_last)

    def out_of_time(self, epoch_seconds: float) -> bool:
        """Whether another epoch as long as the last one would end past the deadline."""
        return self.deadline is not None and time.monotonic() + epoch_seconds > self.deadline

    def autocast(self) -> torch.autocast | nullcontext[None]:
        """bfloat16 autocast on a CUDA device that supports it (no loss scaling needed); else fp32."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


class TrialFailed(Exception):
    """A trial that could not train (e.g. CUDA out of memory); the study catches it and goes on."""


class Status(enum.Enum):
    """How a trial ended."""

    COMPLETE = "complete"
    PRUNED = "pruned"  # stopped by the study's pruner
    DIVERGED = "diverged"  # its loss became NaN or infinite
    OUT_OF_MEMORY = "out_of_memory"


class BestEpoch:
    """The best epoch so far by the study's metric, what it predicted and the model it had; counts stale epochs.

    Both trainers keep the same things: the best epoch's metrics and validation probabilities (for
    the trial's artifacts, pruned or not) and its trained model (kept only by a complete trial).
    """

    def __init__(self, metric: str, *, keep_last: bool = False) -> None:
        self.metric = metric
        self.keep_last = keep_last
        self.metrics: EpochMetrics | None = None
        self.probabilities: np.ndarray | None = None
        self.model: Any = None
        self.stale = 0  # epochs since the last improvement

    def offer(self, metrics: EpochMetrics, probabilities: np.ndarray, model: Any, *, replace: bool = False) -> bool:
        """Keep this epoch if it beats the best (or `replace`: the model kept is always the latest); True if kept.

        `model` is a callable that snapshots the model, called only when the epoch is kept.
        """
        if replace or self.keep_last or self.metrics is None or better_epoch(metrics, self.metrics, self.metric):
            self.metrics, self.probabilities, self.model, self.stale = metrics, probabilities, model(), 0
            return True
        self.stale += 1
        return False


@dataclass
class TrialResult:
    """How a trial ended, its best epoch by the study's metric, and its history."""

    status: Status
    best: EpochMetrics | None
    history: list[EpochMetrics]
    seconds: float
    trainable_params: int = 0
    total_params: int = 0
    reason: str = ""
    # class probabilities of the best epoch for the validation items, in dataset order: [n_val, classes]
    val_probabilities: np.ndarray | None = field(default=None, repr=False)
    # the trained parts a study keeps when the trial becomes its best: a state dict (finetune) or a
    # fitted scikit-learn pipeline (features); None for a trial that did not complete
    model: Any = field(default=None, repr=False)

    @classmethod
    def ended(
        cls,
        status: Status,
        started: float,
        tracker: BestEpoch,
        history: list[EpochMetrics],
        *,
        params: tuple[int, int] = (0, 0),
        reason: str = "",
    ) -> TrialResult:
        """A trial that ran epochs: complete ones keep their model, the others their best epoch's figures only."""
        return cls(
            status=status,
            best=tracker.metrics,
            history=history,
            seconds=time.perf_counter() - started,
            trainable_params=params[0],
            total_params=params[1],
            reason=reason,
            val_probabilities=tracker.probabilities,
            model=tracker.model if status is Status.COMPLETE else None,
        )

    @classmethod
    def failed(
        cls, status: Status, reason: str, started: float, history: list[EpochMetrics] | None = None
    ) -> TrialResult:
        return cls(
            status=status, best=None, history=history or [], seconds=time.perf_counter() - started, reason=reason
        )
