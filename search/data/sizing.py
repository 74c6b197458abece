"""The input size a study uses: what the images are, what the backbone was trained at, what the device affords."""

from __future__ import annotations

import numpy as np

from search.data.sources import ImageSource

# Fine-tuning on a CPU: images x side^2 one pass through the backbone may cost (~12 s of EfficientNet-Lite0 on 2
# cores). 600 photos keep 224 px; 1,800 digits get 128; 4,000 CIFAR images 96. --image-size overrides it.
CPU_FINETUNE_PIXELS = 32e6
CPU_MIN_IMAGE_SIZE = 96  # below this pretrained features lose too much (CIFAR: 50% at 64 px, 69% at 128)
MIN_IMAGE_SIZE = 32  # every backbone here downsamples by 32


def typical_size(source: ImageSource, *, sample: int = 64) -> int:
    """Median shorter side over a spread sample of items (headers only where the format allows)."""
    picks = np.linspace(0, len(source) - 1, num=min(sample, len(source))).astype(int)
    sides = []
    for index in np.unique(picks):
        try:
            with source.decode(int(index)) as image:
                sides.append(min(image.size))
        except Exception:
            continue
    return int(np.median(sides)) if sides else 224


def default_image_size(*, native: int, backbone_native: int, pretrained: bool, images: int, cpu_budget: bool) -> int:
    """The input size a study uses when --image-size is not given.

    A pretrained backbone sees its native resolution, small images upscaled: its filters were learnt
    at that scale (pooled EfficientNet-Lite0 features of 32 px CIFAR images: 50% val at 64 px, 74.5% at
    224). A network from scratch keeps the data's own size. With `cpu_budget` (fine-tuning on a CPU),
    the largest multiple of 32 at which the images pass through the backbone within CPU_FINETUNE_PIXELS.
    """
    if not pretrained:
        return min(backbone_native, max(MIN_IMAGE_SIZE, -(-native // 32) * 32))
    if not cpu_budget:
        return backbone_native
    affordable = int((CPU_FINETUNE_PIXELS / max(images, 1)) ** 0.5) // 32 * 32
    return max(CPU_MIN_IMAGE_SIZE, min(backbone_native, affordable))
