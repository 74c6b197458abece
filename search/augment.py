"""Augmentation presets from the seeds (flips, rotation 20, shifts 0.2, zoom 0.2), on uint8 tensors."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from search.errors import UserError


def augmentation(name: str) -> v2.Transform | None:
    """The preset's transform, or None for 'none' (which lets frozen computation be cached)."""
    if name == "none":
        return None
    if name == "light":
        return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    if name == "strong":
        return v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.RandomAffine(degrees=20, translate=(0.2, 0.2), scale=(0.8, 1.2)),
                v2.ColorJitter(brightness=0.2, contrast=0.2),
            ]
        )
    raise UserError(f"unknown augmentation '{name}'; choose none, light or strong")


def augment_batch(transform: v2.Transform, images: torch.Tensor) -> torch.Tensor:
    """Apply `transform` to each image separately, so every image gets its own random draw."""
    return torch.stack([transform(image) for image in images])
