"""The input size a study uses: what the images are and what the backbone was trained at."""

from __future__ import annotations

import numpy as np

from search.data.sources import ImageSource

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


def default_image_size(*, native: int, backbone_native: int, pretrained: bool) -> int:
    """The input size a study uses when --image-size is not given.

    A pretrained backbone sees its native resolution, small images upscaled: its filters were learnt
    at that scale (pooled EfficientNet-Lite0 features of 32 px CIFAR images: 50% val at 64 px, 74.5% at
    224). No device shrinks them: where training stages at that size is slow, the study offers cheaper
    trials instead (search.study.planning). A network from scratch keeps the data's own size.
    """
    if not pretrained:
        return min(backbone_native, max(MIN_IMAGE_SIZE, -(-native // 32) * 32))
    return backbone_native
