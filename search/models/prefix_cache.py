"""Activations of frozen backbone stages, computed once per process and reused by every trial.

When a trial trains no augmentation, what the frozen stages produce for an image never changes, so
running them again each epoch and each trial is wasted work. Entries are keyed by how many leading
stages are frozen and, for heads that pool first, by the grid they pool to: a pooled entry is a few
kilobytes an image at any input size, so frozen heads read native-size features whatever the data's
size. The cache is bounded in bytes and drops the oldest entry first.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import nn

from search.data.dataset import Dataset
from search.data.pixels import normalize_pixels
from search.models.backbones import Backbone

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 3 * 2**30  # a few frozen prefixes of a few thousand images; bigger sets recompute
EXTRACT_BATCH = 256
Key = tuple[int, int | None]  # (frozen stages, the grid their output is pooled to; None: not pooled)


def normalize(images: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """uint8 NCHW -> float normalised with the backbone's mean and std, on the images' device."""
    return normalize_pixels(images, backbone.mean, backbone.std)


class FrozenPrefixCache:
    """Frozen-prefix activations for every image of a dataset, by number of frozen stages (and pooling grid)."""

    def __init__(
        self, backbone: Backbone, data: Dataset, device: torch.device, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
    ) -> None:
        self.backbone = backbone
        self.data = data
        self.device = device
        self.budget_bytes = budget_bytes
        self.waypoints: set[int] = set()  # prefix depths a pass keeps on its way deeper: see keep_on_the_way
        self._entries: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self._image_bytes: dict[Key, int] = {}  # one image's entry size, found once by a one-image pass

    @torch.no_grad()
    def run_prefix(self, images: torch.Tensor, frozen_stages: int) -> torch.Tensor:
        """Normalise uint8 images and run them through the first `frozen_stages` stages."""
        x = normalize(images.to(self.device, non_blocking=True), self.backbone)
        return self.backbone.stage_range(0, frozen_stages)(x)  # NHWC from the first convolution on: see create_backbone

    def fits(self, frozen_stages: int, *, grid: int | None = None) -> bool:
        """Whether the entry for every image would fit the budget (the cost planner asks before any is built)."""
        return self._bytes_needed(frozen_stages, grid) <= self.budget_bytes

    def get(self, frozen_stages: int, *, grid: int | None = None) -> torch.Tensor | None:
        """Activations [N, C, H, W] for all images (pooled to grid x grid if asked), or None over the budget."""
        key = (frozen_stages, grid)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        if grid is not None and not self._deepest_unpooled(frozen_stages):
            self._pool_every_cut(frozen_stages, grid)  # from the pixels: one pass serves every cut point
            if key in self._entries:
                return self._entries[key]
        needed = self._bytes_needed(frozen_stages, grid)
        if needed > self.budget_bytes:
            log.debug("prefix of %d stages needs %d bytes, over the cache budget", frozen_stages, needed)
            return None
        activations = self._compute(frozen_stages, grid)
        while self._entries and self._bytes() + needed > self.budget_bytes:
            self._entries.popitem(last=False)
        self._entries[key] = activations
        return activations

    def keep_on_the_way(self, depths: set[int]) -> None:
        """Keep the output of these depths whenever a deeper entry is computed through them (when they fit).

        The study's trials need prefixes of several depths; each one computed from the pixels is a
        full pass of the expensive high-resolution stages, each one from a kept shallower one is not.
        """
        self.waypoints = set(depths)

    def held(self) -> list[Key]:
        """The entries held now, oldest first: what a trial will read instead of running the stages."""
        return list(self._entries)

    def _bytes_needed(self, frozen_stages: int, grid: int | None) -> int:
        key = (frozen_stages, grid)
        if key not in self._image_bytes:  # the planner asks for every cut and depth: one probe pass each
            probe = self.run_prefix(self.data.images[:1], frozen_stages)
            if grid is not None:
                probe = nn.functional.adaptive_avg_pool2d(probe, grid)
            self._image_bytes[key] = probe.numel() * probe.element_size()
        return self._image_bytes[key] * len(self.data.images)

    def _deepest_unpooled(self, frozen_stages: int) -> int:
        """The deepest unpooled entry held at or before `frozen_stages` (0: none, start from the pixels)."""
        return max(
            (stages for stages, pooled in self._entries if pooled is None and stages <= frozen_stages), default=0
        )

    @torch.no_grad()
    def _compute(self, frozen_stages: int, grid: int | None) -> torch.Tensor:
        """From the deepest shorter unpooled prefix already cached, running only the stages after it; else the pixels.

        Trials that cut or unfreeze at different depths each need their own prefix: on 600 photos at
        224 px, every prefix from the pixels cost a pass of the expensive high-resolution stages.
        A pooled entry is pooled batch by batch, so the full maps it comes from are never all held.
        """
        start = self._deepest_unpooled(frozen_stages)
        on_the_way = [depth for depth in self.waypoints if start < depth < frozen_stages and self.fits(depth)]
        if on_the_way and self.get(min(on_the_way)) is not None:
            start = min(on_the_way)
        if start:
            rest = self.backbone.stage_range(start, frozen_stages)
            batches = (rest(batch) for batch in self._entries[(start, None)].split(EXTRACT_BATCH))
        else:
            batches = (self.run_prefix(batch, frozen_stages) for batch in self.data.images.split(EXTRACT_BATCH))
        if grid is not None:
            batches = (nn.functional.adaptive_avg_pool2d(batch, grid) for batch in batches)
        return torch.cat(list(batches))

    @torch.no_grad()
    def _pool_every_cut(self, frozen_stages: int, grid: int) -> None:
        """One pass of the pixels that keeps every cut point's output pooled, and the waypoints' as they are.

        Frozen heads at different cut points each read their pooled entry: a few kilobytes an image,
        where a pass of the high-resolution stages per cut point would cost a minute on a CPU.
        """
        backbone = self.backbone
        pooled_at = {backbone.stage_index(cut) + 1 for cut in backbone.cut_points} | {frozen_stages}
        pooled_at = {depth for depth in pooled_at if (depth, grid) not in self._entries}
        room = self.budget_bytes - sum(self._bytes_needed(depth, grid) for depth in pooled_at)
        kept_at = set()
        for depth in sorted(self.waypoints, reverse=True):  # the deepest are the smallest: they come first
            needed = self._bytes_needed(depth, None)
            if depth < max(pooled_at) and needed <= room:
                kept_at.add(depth)
                room -= needed
        outputs: dict[Key, list[torch.Tensor]] = {}
        for images in self.data.images.split(EXTRACT_BATCH):
            x = normalize(images.to(self.device, non_blocking=True), backbone)
            for depth, stage in enumerate(list(backbone.stages.values())[: max(pooled_at)], start=1):
                x = stage(x)
                if depth in pooled_at:
                    outputs.setdefault((depth, grid), []).append(nn.functional.adaptive_avg_pool2d(x, grid))
                if depth in kept_at:
                    outputs.setdefault((depth, None), []).append(x)
        for key, parts in outputs.items():
            activations = torch.cat(parts)
            needed = activations.numel() * activations.element_size()
            while self._entries and self._bytes() + needed > self.budget_bytes:
                self._entries.popitem(last=False)
            if needed <= self.budget_bytes:
                self._entries[key] = activations

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())
