"""Pixels as a backbone takes them: uint8 images scaled and standardised with its weights' statistics."""

from __future__ import annotations

import torch


def normalize_pixels(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NCHW -> float scaled to [0, 1] and standardised per channel, on the images' device."""
    mean_column = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_column = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_column) / std_column
