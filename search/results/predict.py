"""`python -m search predict`: class and probability per image from an exported model folder.

Images are decoded exactly as the study decoded its own (search.data.dataset.decode_image_file), so a
bundle scores files on disk the way its trial scored the study's images.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.data.dataset import decode_image_file
from search.data.sources import IMAGE_SUFFIXES
from search.errors import UserError
from search.kinds import TrainedModel

log = logging.getLogger(__name__)

BATCH = 64  # images decoded and scored at a time: bounded memory for any folder


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str
    probability: float


def image_files(paths: list[Path]) -> list[Path]:
    """Image files named directly or found (recursively) in the folders named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path} is neither an image file nor a folder")
    if not files:
        raise UserError(f"no images ({'/'.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}")
    return files


def predict_files(model: TrainedModel, files: list[Path]) -> list[Prediction]:
    """The most probable class per readable file; unreadable files are skipped with a warning."""
    predictions: list[Prediction] = []
    bad: list[str] = []
    for start in range(0, len(files), BATCH):
        decoded: list[tuple[Path, np.ndarray]] = []
        for path in files[start : start + BATCH]:
            try:
                decoded.append((path, decode_image_file(path, model.image_size)))
            except Exception as exc:  # PIL raises many types for a broken file
                bad.append(f"{path}: {exc}")
        if not decoded:
            continue
        images = torch.from_numpy(np.stack([pixels for _, pixels in decoded]))
        probabilities = model.predict_proba(images)
        for (path, _), row in zip(decoded, probabilities, strict=True):
            best = int(row.argmax())
            predictions.append(Prediction(path, model.class_names[best], float(row[best])))
    if bad:
        log.warning("skipped %d unreadable image(s) of %d (e.g. %s)", len(bad), len(files), bad[0])
    if not predictions:
        raise UserError(f"none of the {len(files)} image(s) could be read (e.g. {bad[0]})")
    return predictions


def write_csv(predictions: list[Prediction], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "class", "probability"])
        writer.writerows([str(p.path), p.label, f"{p.probability:.6f}"] for p in predictions)
