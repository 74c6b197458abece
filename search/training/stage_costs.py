"""What each backbone stage costs on this machine, and what a trial of given stages and epochs costs from that.

Measured once per study on its own decoded images and device (search.study.planning decides from it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from search.models.backbones import Backbone
from search.models.prefix_cache import normalize

TIMING_BATCH = 32  # a training batch's size: per-image costs at batch 1 overstate them several times
# what an epoch costs beyond the stages' own passes (optimiser steps, augmentation, batching, the head): the
# estimate times this is what bench/bench_defaults.py finds trials take
EPOCH_OVERHEAD = 1.5


@dataclass(frozen=True)
class StageCosts:
    """Milliseconds per image of each backbone stage at the study's input size, measured once on its device."""

    stages: tuple[str, ...]
    forward_ms: tuple[float, ...]  # eval, no gradient: what a frozen stage costs
    train_ms: tuple[float, ...]  # train mode, forward and backward: what a trained stage costs
    device: str
    image_size: int

    def to_record(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, object]) -> StageCosts:
        return cls(
            tuple(record["stages"]),  # type: ignore[arg-type]
            tuple(record["forward_ms"]),  # type: ignore[arg-type]
            tuple(record["train_ms"]),  # type: ignore[arg-type]
            str(record["device"]),
            int(record["image_size"]),  # type: ignore[call-overload]
        )

    def pass_seconds(self, images: int) -> float:
        """One pass of the whole network over `images` images, without gradients."""
        return images * sum(self.forward_ms) / 1000


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_stage_costs(backbone: Backbone, images: torch.Tensor, device: torch.device) -> StageCosts:
    """Time each stage on a batch of the study's decoded images: once to warm up, then once measured.

    The stages trained are timed on copies, so the shared backbone's weights and statistics stay as they are.
    """
    x = normalize(images[:TIMING_BATCH].to(device), backbone)
    forward, train = [], []
    for name in backbone.stage_names:
        stage = backbone.stages[name]
        trained = copy.deepcopy(stage).train()
        for parameter in trained.parameters():
            parameter.requires_grad_(True)
        for measured in (False, True):
            _synchronize(device)
            started = time.perf_counter()
            with torch.no_grad():
                out = stage.eval()(x)
            _synchronize(device)
            middle = time.perf_counter()
            trained(x).float().mean().backward()
            _synchronize(device)
            if measured:
                forward.append((middle - started) * 1000 / len(x))
                train.append((time.perf_counter() - middle) * 1000 / len(x))
        x = out
    return StageCosts(backbone.stage_names, tuple(forward), tuple(train), device.type, int(images.shape[-1]))


@dataclass(frozen=True)
class Workload:
    """What one trial's epochs go over."""

    train: int  # training items
    val: int  # validation items
    max_epochs: int
    cached: Callable[[int], bool]  # whether the output of the first k stages fits the shared cache


def trial_seconds(costs: StageCosts, work: Workload, *, frozen: int, stop: int, augment: bool) -> float:
    """A trial training stages [frozen, stop) for --max-epochs: its training and validation passes.

    The frozen prefix is read from the cache unless the images are augmented or it does not fit there.
    """
    prefix = sum(costs.forward_ms[:frozen])
    recompute = augment or not work.cached(frozen)
    epoch_ms = work.train * (sum(costs.train_ms[frozen:stop]) + (prefix if recompute else 0.0))
    epoch_ms += work.val * (sum(costs.forward_ms[frozen:stop]) + (0.0 if work.cached(frozen) else prefix))
    return work.max_epochs * EPOCH_OVERHEAD * epoch_ms / 1000
