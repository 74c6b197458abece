"""Activations of frozen backbone stages, computed once per process and reused by every trial.

When a trial trains no augmentation, what the frozen stages produce for an image never changes, so
running them again each epoch and each trial is wasted work. Entries are keyed by how many leading
stages are frozen; the cache is bounded in bytes and drops the oldest entry first.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch

from search.data.dataset import Dataset
from search.data.pixels import normalize_pixels
from search.models.backbones import Backbone

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 3 * 2**30  # a few frozen prefixes of a few thousand images; bigger sets recompute
EXTRACT_BATCH = 256


def normalize(images: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """uint8 NCHW -> float normalised with the backbone's mean and std, on the images' device."""
    return normalize_pixels(images, backbone.mean, backbone.std)


class FrozenPrefixCache:
    """Frozen-prefix activations for every image of a dataset, by number of frozen stages."""

    def __init__(
        self, backbone: Backbone, data: Dataset, device: torch.device, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
    ) -> None:
        self.backbone = backbone
        self.data = data
        self.device = device
        self.budget_bytes = budget_bytes
        self.extractions = 0  # how many prefixes were computed: tests count these, never time them
        self._entries: OrderedDict[int, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def run_prefix(self, images: torch.Tensor, frozen_stages: int) -> torch.Tensor:
        """Normalise uint8 images and run them through the first `frozen_stages` stages."""
        x = normalize(images.to(self.device, non_blocking=True), self.backbone)
        return self.backbone.stage_range(0, frozen_stages)(x)  # NHWC from the first convolution on: see create_backbone

    def get(self, frozen_stages: int) -> torch.Tensor | None:
        """Activations [N, C, H, W] for all images, or None when they would not fit the budget."""
        if frozen_stages in self._entries:
            self._entries.move_to_end(frozen_stages)
            return self._entries[frozen_stages]
        probe = self.run_prefix(self.data.images[:1], frozen_stages)
        needed = probe.numel() * probe.element_size() * len(self.data.images)
        if needed > self.budget_bytes:
            log.debug("prefix of %d stages needs %d bytes, over the cache budget", frozen_stages, needed)
            return None
        activations = self._compute(frozen_stages)
        self.extractions += 1
        while self._entries and self._bytes() + needed > self.budget_bytes:
            self._entries.popitem(last=False)
        self._entries[frozen_stages] = activations
        return activations

    @torch.no_grad()
    def _compute(self, frozen_stages: int) -> torch.Tensor:
        """From the deepest shorter prefix already cached, running only the stages after it; else from the pixels.

        Trials that cut or unfreeze at different depths each need their own prefix: on 600 photos at
        224 px, every prefix from the pixels cost a pass of the expensive high-resolution stages.
        """
        start = max((stages for stages in self._entries if stages < frozen_stages), default=0)
        if not start:
            return torch.cat([self.run_prefix(batch, frozen_stages) for batch in self.data.images.split(EXTRACT_BATCH)])
        rest = self.backbone.stage_range(start, frozen_stages)
        return torch.cat([rest(batch) for batch in self._entries[start].split(EXTRACT_BATCH)])

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())
