"""Augmentation presets from the seeds (flips, rotation 20, shifts 0.2, zoom 0.2), batched.

torchvision's v2 transforms draw one set of random parameters per call, so giving every image its
own draw means a Python loop over the batch, which dominates a GPU epoch. Here each image gets its
own affine matrix and colour factors, and one `grid_sample` warps the whole batch on its device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional

from search.errors import UserError


@dataclass(frozen=True)
class Augmentation:
    """Random per-image affine warp (rotation, shift, zoom, optional flip) and colour jitter."""

    degrees: float
    translate: float  # largest shift, as a fraction of the image side
    zoom: float  # scale drawn from [1 - zoom, 1 + zoom]
    flip: bool
    jitter: float  # brightness and contrast factors drawn from [1 - jitter, 1 + jitter]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> uint8 [B, 3, H, W], each image warped with its own draw."""
        count, device = images.shape[0], images.device

        def uniform(spread: float) -> torch.Tensor:
            return (torch.rand(count) * 2 - 1) * spread

        angle = uniform(math.radians(self.degrees))
        scale = 1 + uniform(self.zoom)
        mirror = torch.where(torch.rand(count) < 0.5, -1.0, 1.0) if self.flip else torch.ones(count)
        theta = torch.zeros(count, 2, 3)
        # affine_grid maps output to input coordinates: zooming in by `scale` reads a 1/scale window
        theta[:, 0, 0] = torch.cos(angle) / scale * mirror
        theta[:, 0, 1] = -torch.sin(angle) / scale
        theta[:, 1, 0] = torch.sin(angle) / scale * mirror
        theta[:, 1, 1] = torch.cos(angle) / scale
        theta[:, :, 2] = torch.stack([uniform(2 * self.translate), uniform(2 * self.translate)], dim=1)
        pixels = images.float()
        grid = functional.affine_grid(theta.to(device), list(pixels.shape), align_corners=False)
        warped = functional.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.jitter > 0:
            brightness = (1 + uniform(self.jitter)).to(device).view(-1, 1, 1, 1)
            contrast = (1 + uniform(self.jitter)).to(device).view(-1, 1, 1, 1)
            mean = warped.mean(dim=(1, 2, 3), keepdim=True)
            warped = ((warped - mean) * contrast + mean) * brightness
        return warped.round().clamp(0, 255).to(torch.uint8)


PRESETS = {
    "light": Augmentation(degrees=10, translate=0.1, zoom=0.1, flip=False, jitter=0.0),
    "strong": Augmentation(degrees=20, translate=0.2, zoom=0.2, flip=True, jitter=0.2),
}


def augmentation(name: str) -> Augmentation | None:
    """The preset by name, or None for 'none' (which lets frozen computation be cached)."""
    if name == "none":
        return None
    if name not in PRESETS:
        raise UserError(f"unknown augmentation '{name}'; choose none, {', '.join(PRESETS)}")
    return PRESETS[name]
