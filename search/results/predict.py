"""`python -m search predict`: class and probability per image from an exported model folder.

Images are decoded exactly as the study decoded its own (search.data.decode.decode_image_file), so a
bundle scores files on disk the way its trial scored the study's images. An ONNX bundle is scored by
onnxruntime, and then nothing here imports torch: `python -m search.results.predict` runs without it.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from rich.console import Console

from search.data.decode import decode_image_file
from search.data.sources import IMAGE_SUFFIXES
from search.errors import UserError
from search.results.onnx_bundle import OnnxModel, is_onnx_bundle, load_onnx_bundle

if TYPE_CHECKING:
    from search.kinds import TrainedModel

Model = Union[OnnxModel, "TrainedModel"]

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


def load_model(path: Path, *, device: str = "auto") -> Model:
    """An export folder's model: ONNX ones through onnxruntime, others through PyTorch (imported only then)."""
    if is_onnx_bundle(path):
        return load_onnx_bundle(path)
    from search.results.bundles import load_bundle
    from search.training.core import resolve_device

    return load_bundle(path, device=resolve_device(device))


def probabilities(model: Model, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities of decoded uint8 images, by onnxruntime or by the PyTorch model."""
    if isinstance(model, OnnxModel):
        return model.predict_pixels(pixels)
    import torch  # a PyTorch bundle: only now is torch needed

    return model.predict_proba(torch.from_numpy(pixels))


def predict_files(model: Model, files: list[Path]) -> list[Prediction]:
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
        scores = probabilities(model, np.stack([pixels for _, pixels in decoded]))
        for (path, _), row in zip(decoded, scores, strict=True):
            best = int(row.argmax())
            predictions.append(Prediction(path, model.class_names[best], float(row[best])))
    if bad:
        log.warning("skipped %d unreadable image(s) of %d (e.g. %s)", len(bad), len(files), bad[0])
    if not predictions:
        raise UserError(f"none of the {len(files)} image(s) could be read (e.g. {bad[0]})")
    return predictions


def tab_lines(predictions: list[Prediction]) -> str:
    """`path<TAB>class<TAB>probability` per image: easy to read, sort, cut or paste into a sheet."""
    return "".join(f"{p.path}\t{p.label}\t{p.probability:.4f}\n" for p in predictions)


def write_csv(predictions: list[Prediction], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "class", "probability"])
        writer.writerows([str(p.path), p.label, f"{p.probability:.6f}"] for p in predictions)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """predict's arguments, for `python -m search predict` and `python -m search.results.predict` alike."""
    parser.add_argument("--model", type=Path, required=True, help="a folder written by `python -m search export`")
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of them")
    parser.add_argument("--out", type=Path, default=None, help="write a CSV here instead of printing")


def write_predictions(predictions: list[Prediction], out: Path | None, console: Console) -> None:
    """A CSV at `out` (said on the console), or tab-separated lines on stdout."""
    if out is not None:
        write_csv(predictions, out)
        console.print(f"wrote {len(predictions)} predictions to {out}", highlight=False)
    else:
        sys.stdout.write(tab_lines(predictions))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m search.results.predict --model DIR IMAGES...`: an ONNX bundle's predictions without torch."""
    parser = argparse.ArgumentParser(prog="python -m search.results.predict", description=main.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        predictions = predict_files(load_model(args.model), image_files(args.images))
    except UserError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    write_predictions(predictions, args.out, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
