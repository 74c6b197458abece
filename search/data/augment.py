"""Augmentation presets, batched: the seeds' affine warps and a random-resized-crop preset for photos.

torchvision's v2 transforms draw one set of random parameters per call, so giving every image its
own draw means a Python loop over the batch, which dominates a GPU epoch. Here each image gets its
own affine matrix (and colour factors), and one `grid_sample` warps the whole batch on its device.
The photo preset draws its crop boxes with torchvision's own `RandomResizedCrop.get_params`, so the
boxes are exactly torchvision's; only the resampling is batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.nn import functional
from torchvision.transforms import RandomResizedCrop

from search.errors import UserError


class BatchAugmentation(Protocol):
    """uint8 [B, 3, H, W] -> uint8 [B, 3, H, W], each image with its own random draw."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def _uniform(count: int, spread: float) -> torch.Tensor:
    return (torch.rand(count) * 2 - 1) * spread


def _mirror(count: int, flip: bool) -> torch.Tensor:
    """-1 (mirrored) or 1 per image: half the images, at random, when flipping is on."""
    return torch.where(torch.rand(count) < 0.5, -1.0, 1.0) if flip else torch.ones(count)


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Float pixels sampled through per-image affine matrices mapping output to input coordinates."""
    pixels = images.float()
    grid = functional.affine_grid(theta.to(images.device), list(pixels.shape), align_corners=False)
    return functional.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.round().clamp(0, 255).to(torch.uint8)


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
        angle = _uniform(count, math.radians(self.degrees))
        scale = 1 + _uniform(count, self.zoom)
        mirror = _mirror(count, self.flip)
        theta = torch.zeros(count, 2, 3)
        # affine_grid maps output to input coordinates: zooming in by `scale` reads a 1/scale window
        theta[:, 0, 0] = torch.cos(angle) / scale * mirror
        theta[:, 0, 1] = -torch.sin(angle) / scale
        theta[:, 1, 0] = torch.sin(angle) / scale * mirror
        theta[:, 1, 1] = torch.cos(angle) / scale
        theta[:, :, 2] = torch.stack([_uniform(count, 2 * self.translate), _uniform(count, 2 * self.translate)], dim=1)
        warped = _warp(images, theta)
        if self.jitter > 0:
            brightness = (1 + _uniform(count, self.jitter)).to(device).view(-1, 1, 1, 1)
            contrast = (1 + _uniform(count, self.jitter)).to(device).view(-1, 1, 1, 1)
            mean = warped.mean(dim=(1, 2, 3), keepdim=True)
            warped = ((warped - mean) * contrast + mean) * brightness
        return _to_uint8(warped)


@dataclass(frozen=True)
class ResizedCropFlip:
    """The standard ImageNet training augmentation: a random box of the image, resized back, and a random flip."""

    scale: tuple[float, float]  # area of the box, as a fraction of the image's
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio of the box
    flip: bool = True

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> uint8 [B, 3, H, W], each image cropped with its own box."""
        count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        boxes = torch.tensor(
            [RandomResizedCrop.get_params(images[0], list(self.scale), list(self.ratio)) for _ in range(count)],
            dtype=torch.float32,
        )  # (top, left, box height, box width) in pixels
        top, left, box_height, box_width = boxes.unbind(1)
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0] = box_width / width * _mirror(count, self.flip)
        theta[:, 1, 1] = box_height / height
        theta[:, 0, 2] = (left + box_width / 2) / width * 2 - 1  # the box's centre in [-1, 1] coordinates
        theta[:, 1, 2] = (top + box_height / 2) / height * 2 - 1
        return _to_uint8(_warp(images, theta))


PRESETS: dict[str, BatchAugmentation] = {
    "light": Augmentation(degrees=10, translate=0.1, zoom=0.1, flip=False, jitter=0.0),
    "strong": Augmentation(degrees=20, translate=0.2, zoom=0.2, flip=True, jitter=0.2),
    # torchvision's reference recipe uses scale (0.08, 1); on an already centre-cropped image a box under
    # a quarter of it too often loses the object, so photos keep at least 25% of the area
    "photo": ResizedCropFlip(scale=(0.25, 1.0)),
}


def augmentation(name: str) -> BatchAugmentation | None:
    """The preset by name, or None for 'none' (which lets frozen computation be cached)."""
    if name == "none":
        return None
    if name not in PRESETS:
        raise UserError(f"unknown augmentation '{name}'; choose none, {', '.join(PRESETS)}")
    return PRESETS[name]
