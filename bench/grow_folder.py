"""Grow a real image folder to a given size, for scale runs where the full data set cannot be downloaded.

Every new image is a real one of the same class, randomly cropped (80-100% of each side), maybe
flipped, its brightness shifted by up to 10%, saved as JPEG at the original's size. The layout is
kept: a train/ test/ folder of class folders stays one, and each split grows by the same factor.

    python bench/grow_folder.py ../shared/data/cifar10-mini /tmp/cifar10-60k --images 60000
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def variant(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    crop_w, crop_h = round(width * rng.uniform(0.8, 1.0)), round(height * rng.uniform(0.8, 1.0))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    grown = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        grown = ImageOps.mirror(grown)
    return ImageEnhance.Brightness(grown).enhance(rng.uniform(0.9, 1.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--images", type=int, default=60000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    originals = sorted(p for p in args.source.rglob("*") if p.suffix.lower() in SUFFIXES)
    rng = random.Random(args.seed)
    written = 0
    for index, original in enumerate(originals):
        # spread evenly: each original gives images/originals images (itself included), give or take one
        copies = args.images * (index + 1) // len(originals) - args.images * index // len(originals)
        folder = args.target / original.parent.relative_to(args.source)
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(original) as opened:
            image = opened.convert("RGB")
        for copy in range(copies):
            made = image if copy == 0 else variant(image, rng)
            made.save(folder / f"{original.stem}-{copy}.jpg", quality=90)
            written += 1
    print(f"{written} images under {args.target}")


if __name__ == "__main__":
    main()
