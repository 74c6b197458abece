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

import numpy as np
import torch
from torch import nn

from search.augment import augmentation
from search.backbones import Backbone
from search.configs import FinetuneConfig
from search.dataset import Dataset
from search.prefix_cache import FrozenPrefixCache
from search.sources import TRAIN, VAL
from search.training import EpochMetrics, Reporter, TrainSettings, TrialResult, is_better

EVAL_BATCH = 256


def build_head(in_channels: int, config: FinetuneConfig, num_classes: int) -> nn.Sequential:
    """Global average pool, then `head_depth` x ([BN] Linear ReLU Dropout), then the classifier."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    width = in_channels
    for _ in range(config.head_depth):
        if config.head_batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers += [nn.Linear(width, config.head_width), nn.ReLU(inplace=True), nn.Dropout(config.head_dropout)]
        width = config.head_width
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def stage_split(backbone: Backbone, config: FinetuneConfig) -> tuple[int, int]:
    """(frozen, cut): stages [0, frozen) stay frozen and shared, stages [frozen, cut) are the trial's to train."""
    cut = backbone.stage_index(config.cut) + 1
    return cut - min(config.unfreeze_blocks, cut), cut


def make_optimizer(config: FinetuneConfig, head: nn.Module, trunk: nn.Module) -> torch.optim.Optimizer:
    """One parameter group for the head, one with a lower learning rate for the unfrozen stages."""
    groups = [{"params": list(head.parameters()), "lr": config.lr}]
    trunk_params = [p for p in trunk.parameters() if p.requires_grad]
    if trunk_params:
        groups.append({"params": trunk_params, "lr": config.lr * config.backbone_lr_factor})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _batches(count: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a last batch of one is dropped because batch norm cannot train on it."""
    order = torch.randperm(count, generator=generator)
    for start in range(0, count, size):
        batch = order[start : start + size]
        if len(batch) > 1:
            yield batch


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
        self.frozen_stages, cut = stage_split(backbone, config)
        self.cache = cache
        self.device = settings.device
        self.augment = augmentation(config.augment)
        self.cached = cache.get(self.frozen_stages)  # validation always; training only without augmentation
        self.trunk = copy.deepcopy(backbone.stage_range(self.frozen_stages, cut)).to(self.device)
        for parameter in self.trunk.parameters():
            parameter.requires_grad_(True)
        channels = backbone.channels_at(config.cut)
        self.head = build_head(channels, config, data.num_classes).to(self.device)
        if self.device.type == "cuda":
            self.trunk = self.trunk.to(memory_format=torch.channels_last)
        self.images, self.labels = data.images, data.labels.to(self.device)
        self.num_classes = data.num_classes
        self.frozen_params = _count(backbone.stage_range(0, self.frozen_stages), trainable=False)

    def inputs(self, index: torch.Tensor, *, train: bool) -> torch.Tensor:
        """What enters the trainable stages for these items."""
        if self.cached is not None and not (train and self.augment is not None):
            return self.cached[index.to(self.cached.device)]
        images = self.images[index].to(self.device, non_blocking=True)
        if train and self.augment is not None:
            images = self.augment(images)
        return self.cache.run_prefix(images, self.frozen_stages)

    def forward(self, x: torch.Tensor, *, train_trunk: bool) -> torch.Tensor:
        with nullcontext() if train_trunk else torch.no_grad():
            features = self.trunk(x)
        return self.head(features)


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
        return TrialResult.failed("out_of_memory", "CUDA out of memory while building the model", started)
    optimizer = make_optimizer(config, net.head, net.trunk)
    trainable = _count(net.head, trainable=True) + _count(net.trunk, trainable=True)
    total = trainable + net.frozen_params
    train_index = torch.from_numpy((data.split == TRAIN).nonzero()[0])
    val_index = torch.from_numpy((data.split == VAL).nonzero()[0])
    generator = torch.Generator().manual_seed(settings.seed)
    amp = settings.autocast()
    history: list[EpochMetrics] = []
    best: EpochMetrics | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_probabilities: np.ndarray | None = None
    stale = 0
    for epoch in range(1, settings.max_epochs + 1):
        epoch_start = time.perf_counter()
        train_trunk = config.unfreeze_blocks > 0 and epoch > config.head_only_epochs
        try:
            train_loss, train_acc = _train_epoch(
                net, optimizer, train_index, config.batch_size, generator, train_trunk, amp
            )
            val_loss, val_acc, val_probabilities = _evaluate(net, val_index, amp)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return TrialResult.failed(
                "out_of_memory",
                f"CUDA out of memory in epoch {epoch} (batch size {config.batch_size})",
                started,
                history,
            )
        metrics = EpochMetrics(epoch, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - epoch_start)
        history.append(metrics)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            return TrialResult.failed(
                "diverged",
                f"loss became {train_loss if not math.isfinite(train_loss) else val_loss} in epoch {epoch}",
                started,
                history,
            )
        if best is None or is_better(metrics, best, settings.metric):
            best, stale, best_probabilities = metrics, 0, val_probabilities
            best_state = {
                k: v.detach().clone()
                for k, v in {**_prefixed(net.trunk, "trunk"), **_prefixed(net.head, "head")}.items()
            }
        else:
            stale += 1
        if reporter.report(epoch, metrics):
            return TrialResult(
                "pruned",
                best,
                history,
                time.perf_counter() - started,
                trainable,
                total,
                "pruned by the study's pruner",
                best_state,
                best_probabilities,
            )
        if stale >= settings.patience:
            break
    return TrialResult(
        "complete", best, history, time.perf_counter() - started, trainable, total, "", best_state, best_probabilities
    )


def _prefixed(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def _train_epoch(
    net: _Network,
    optimizer: torch.optim.Optimizer,
    index: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    train_trunk: bool,
    amp: torch.autocast | nullcontext[None],
) -> tuple[float, float]:
    net.head.train()
    net.trunk.train(train_trunk)
    loss_sum, correct, seen = 0.0, 0, 0
    for batch in _batches(len(index), batch_size, generator):
        items = index[batch]
        x = net.inputs(items, train=True)
        y = net.labels[items.to(net.labels.device)]
        with amp:
            logits = net.forward(x, train_trunk=train_trunk)
            loss = nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    """Mean loss, accuracy and class probabilities over `index`."""
    net.head.eval()
    net.trunk.eval()
    loss_sum, correct = 0.0, 0
    probabilities = []
    for items in index.split(EVAL_BATCH):
        y = net.labels[items.to(net.labels.device)]
        with amp:
            logits = net.forward(net.inputs(items, train=False), train_trunk=False).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        probabilities.append(logits.softmax(1).cpu().numpy())
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, net.num_classes), np.float32)
    return loss_sum / max(len(index), 1), correct / max(len(index), 1), stacked
