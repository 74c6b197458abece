"""Fine-tuning trainer: a plain function of (config, data, backbone, reporter, settings).

Optuna never appears here; the reporter decides whether to stop after each epoch. The frozen
stages are shared with other trials and never modified; the stages a trial trains are copied.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from search.data.augment import augmentation
from search.data.dataset import Dataset
from search.data.sources import TRAIN, VAL
from search.models.backbones import Backbone
from search.models.heads import build_head, pooled_grid
from search.models.prefix_cache import FrozenPrefixCache
from search.training.configs import FinetuneConfig
from search.training.core import EpochMetrics, Reporter, Status, TrainSettings, TrialResult

EVAL_BATCH = 256
WARMUP_FRACTION = 0.1  # of a phase's steps: a fresh head and freshly unfrozen stages start gently, then cosine decay
WARMUP_START = 0.1  # the warm-up starts at this fraction of the learning rate


def head_for(config: FinetuneConfig, in_channels: int, num_classes: int) -> nn.Sequential:
    """The head a finetune config asks for (see search.models.heads.build_head)."""
    return build_head(
        in_channels,
        num_classes,
        depth=config.head_depth,
        width=config.head_width,
        batchnorm=config.head_batchnorm,
        dropout=config.head_dropout,
        pool=config.head_pool,
    )


def trained_span(backbone: Backbone, config: FinetuneConfig) -> tuple[int, int]:
    """(frozen, cut): stages [frozen, cut) are trained; re-initialised stages train everything up to the cut."""
    unfreeze = backbone.max_unfreeze(config.cut) if config.reinit_blocks else config.unfreeze_blocks
    return backbone.trainable_span(config.cut, unfreeze)


def reinitialise(stages: nn.Sequential, count: int) -> None:
    """Random weights again for the first `count` stages (the dogs-to-cats experiment's re-initialised convs)."""
    for stage in list(stages)[:count]:
        for module in stage.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def parameter_groups(config: FinetuneConfig, head: nn.Module, trunk: nn.Sequential | None) -> list[dict[str, Any]]:
    """The head at `lr`; each unfrozen stage at lr x factor x layer_decay ** (its distance back from the cut)."""
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": config.lr}]
    if trunk is not None:
        for distance, stage in enumerate(reversed(list(trunk))):
            params = [p for p in stage.parameters() if p.requires_grad]
            if params:
                lr = config.lr * config.backbone_lr_factor * config.layer_decay**distance
                groups.append({"params": params, "lr": lr})
    return groups


def make_optimizer(config: FinetuneConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over the first WARMUP_FRACTION of `steps`, then cosine decay to zero at the last step."""
    warmup = max(1, round(steps * WARMUP_FRACTION))
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps - warmup)),
        ],
        milestones=[warmup],
    )


def _batches(count: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a last batch of one is dropped because batch norm cannot train on it."""
    order = torch.randperm(count, generator=generator)
    for start in range(0, count, size):
        batch = order[start : start + size]
        if len(batch) > 1:
            yield batch


def _batch_count(count: int, size: int) -> int:
    return count // size + (1 if count % size > 1 else 0)


def _count(module: nn.Module, *, trainable: bool) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


class _Network:
    """Frozen prefix (cached or run under no_grad) -> trainable stages -> head, for one trial."""

    def __init__(
        self,
        config: FinetuneConfig,
        data: Dataset,
        backbone: Backbone,
        cache: FrozenPrefixCache,
        settings: TrainSettings,
    ) -> None:
        self.frozen_stages, self.cut = trained_span(backbone, config)
        self.cache = cache
        self.device = settings.device
        self.augment = augmentation(config.augment)
        self.trunk = copy.deepcopy(backbone.stage_range(self.frozen_stages, self.cut)).to(self.device)
        for parameter in self.trunk.parameters():
            parameter.requires_grad_(True)
        reinitialise(self.trunk, config.reinit_blocks)
        channels = backbone.channels_at(config.cut)
        self.head = head_for(config, channels, data.num_classes).to(self.device)
        self.train_bn = config.train_bn
        self.images, self.labels = data.images, data.labels.to(self.device)
        self.num_classes = data.num_classes
        self.frozen_params = _count(backbone.stage_range(0, self.frozen_stages), trainable=False)
        # what the head reads when no stage trains: its own pooling of the cut's output, cached pooled (identical)
        self.head_grid = pooled_grid(config.head_pool)
        self._prefixes: dict[tuple[int, int | None], torch.Tensor | None] = {}

    def _cached(self, stages: int) -> torch.Tensor | None:
        """The shared cache's entry, looked up once per trial: one over budget would be probed again every batch."""
        grid = self.head_grid if stages == self.cut else None
        if (stages, grid) not in self._prefixes:
            self._prefixes[stages, grid] = self.cache.get(stages, grid=grid)
        return self._prefixes[stages, grid]

    def inputs(self, index: torch.Tensor, *, train: bool, probe: bool = False) -> torch.Tensor:
        """What enters the trainable stages for these items; for the probe, what enters the head."""
        stages = self.cut if probe else self.frozen_stages
        augment = self.augment if train and not probe else None  # the probe fits cached, unaugmented features
        cached = None if augment is not None else self._cached(stages)
        if cached is not None:
            return cached[index.to(cached.device)]
        images = self.images[index].to(self.device, non_blocking=True)
        if augment is not None:
            images = augment(images)
        return self.cache.run_prefix(images, stages)

    def train_mode(self, *, probe: bool) -> None:
        """Head in training mode; the trunk too unless probing, its batch norm only if the config says so."""
        self.head.train()
        self.trunk.train(not probe)
        if not probe and not self.train_bn:
            for module in self.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of what this trial trained: the unfrozen stages ("trunk.") and the head ("head.")."""
        parts = {"trunk": self.trunk, "head": self.head}
        return {f"{name}.{k}": v.detach().clone() for name, part in parts.items() for k, v in part.state_dict().items()}

    def forward(self, x: torch.Tensor, *, probe: bool, train: bool) -> torch.Tensor:
        if not probe:
            with nullcontext() if train else torch.no_grad():
                x = self.trunk(x)
        return self.head(x)


def train_finetune(
    config: FinetuneConfig,
    data: Dataset,
    backbone: Backbone,
    reporter: Reporter,
    settings: TrainSettings,
    *,
    cache: FrozenPrefixCache | None = None,
) -> TrialResult:
    """Train one configuration; report the study's metric each epoch; return the best epoch."""
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    cache = cache or FrozenPrefixCache(backbone, data, settings.device)
    try:
        net = _Network(config, data, backbone, cache, settings)
    except torch.OutOfMemoryError:
        return TrialResult.failed(Status.OUT_OF_MEMORY, "CUDA out of memory while building the model", started)
    trainable = _count(net.head, trainable=True) + _count(net.trunk, trainable=True)
    params = (trainable, trainable + net.frozen_params)
    train_index = torch.from_numpy((data.split == TRAIN).nonzero()[0])
    val_index = torch.from_numpy((data.split == VAL).nonzero()[0])
    generator = torch.Generator().manual_seed(settings.seed)
    amp = settings.autocast()
    history: list[EpochMetrics] = []
    best = settings.best_epoch()
    epoch_steps = _batch_count(len(train_index), config.batch_size)
    if net.frozen_stages < net.cut and config.head_only_epochs > 0 and not config.reinit_blocks:
        _probe(net, config, train_index, generator, amp, epochs=config.head_only_epochs, steps=epoch_steps)
    optimizer = make_optimizer(config, parameter_groups(config, net.head, net.trunk))
    schedule = warmup_cosine(optimizer, epoch_steps * settings.max_epochs)
    for epoch in range(1, settings.max_epochs + 1):
        epoch_start = time.perf_counter()
        try:
            train_loss, train_acc = _train_epoch(net, optimizer, schedule, train_index, config, generator, amp)
            val_loss, val_acc, val_probabilities = _evaluate(net, val_index, amp)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            reason = f"CUDA out of memory in epoch {epoch} (batch size {config.batch_size})"
            return TrialResult.failed(Status.OUT_OF_MEMORY, reason, started, history)
        metrics = EpochMetrics(epoch, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - epoch_start)
        history.append(metrics)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            bad = train_loss if not math.isfinite(train_loss) else val_loss
            return TrialResult.failed(Status.DIVERGED, f"loss became {bad} in epoch {epoch}", started, history)
        best.offer(metrics, val_probabilities, net.state_dict)
        if reporter.report(epoch, metrics):
            return TrialResult.ended(
                Status.PRUNED, started, best, history, params=params, reason="pruned by the study's pruner"
            )
        if best.stale >= settings.patience:
            break
        if epoch < settings.max_epochs and settings.out_of_time(metrics.seconds):
            reason = f"stopped after epoch {epoch} by the study's time budget"
            return TrialResult.ended(Status.COMPLETE, started, best, history, params=params, reason=reason)
    return TrialResult.ended(Status.COMPLETE, started, best, history, params=params)


def _probe(
    net: _Network,
    config: FinetuneConfig,
    index: torch.Tensor,
    generator: torch.Generator,
    amp: torch.autocast | nullcontext[None],
    *,
    epochs: int,
    steps: int,
) -> None:
    """LP of LP-FT: fit the head alone on the cached output of the stages up to the cut, before any stage trains.

    A fitted head sends small, informative gradients into the unfrozen stages instead of a random
    head's large ones (Kumar et al., ICLR 2022). Cached and cheap, so it is not counted as epochs.
    """
    optimizer = make_optimizer(config, parameter_groups(config, net.head, None))
    schedule = warmup_cosine(optimizer, steps * epochs)
    for _ in range(epochs):
        _train_epoch(net, optimizer, schedule, index, config, generator, amp, probe=True)


def _train_epoch(
    net: _Network,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    index: torch.Tensor,
    config: FinetuneConfig,
    generator: torch.Generator,
    amp: torch.autocast | nullcontext[None],
    *,
    probe: bool = False,
) -> tuple[float, float]:
    net.train_mode(probe=probe)
    loss_sum, correct, seen = 0.0, 0, 0
    for batch in _batches(len(index), config.batch_size, generator):
        items = index[batch]
        x = net.inputs(items, train=True, probe=probe)
        y = net.labels[items.to(net.labels.device)]
        with amp:
            logits = net.forward(x, probe=probe, train=True)
            loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += float(loss.detach()) * len(items)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(items)
        if not math.isfinite(loss_sum):
            break
    return loss_sum / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def _evaluate(
    net: _Network, index: torch.Tensor, amp: torch.autocast | nullcontext[None]
) -> tuple[float, float, np.ndarray]:
    """Mean loss (plain cross-entropy, comparable across trials), accuracy and class probabilities over `index`."""
    net.head.eval()
    net.trunk.eval()
    loss_sum, correct = 0.0, 0
    probabilities = []
    for items in index.split(EVAL_BATCH):
        y = net.labels[items.to(net.labels.device)]
        with amp:
            logits = net.forward(net.inputs(items, train=False), probe=False, train=False).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        probabilities.append(logits.softmax(1).cpu().numpy())
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, net.num_classes), np.float32)
    return loss_sum / max(len(index), 1), correct / max(len(index), 1), stacked
