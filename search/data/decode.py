"""An image file as a study sees it: EXIF-upright RGB, shorter side to the size, centre crop, CHW uint8.

numpy and PIL only: exported ONNX models decode with it where torch is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; 16-bit and float greyscale are rescaled, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low or 1.0) * 255.0
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then a centre crop: the aspect ratio is kept, nothing is squashed."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BILINEAR
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def decode_image(image: Image.Image, size: int) -> np.ndarray:
    """An opened image as the study sees it: EXIF-upright RGB, shorter side to `size`, centre crop, CHW uint8."""
    if image.format == "JPEG":
        image.draft(None, (size, size))  # decode big photos at a reduced scale, still >= size
    image.load()
    upright = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    return np.asarray(resize_square(to_rgb(upright), size)).transpose(2, 0, 1)


def decode_image_file(path: Path, size: int) -> np.ndarray:
    """An image file decoded exactly like a study's images, so a saved model sees what it trained on."""
    with Image.open(path) as image:
        return decode_image(image, size)
