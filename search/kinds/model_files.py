"""A trained model as a folder: bundle.json beside its kind's files (network tensors, a fitted pipeline).

One format for every saved model: a trial keeps exactly this folder (zipped, in the artifact store) and
`export` writes exactly this folder, so whatever a study trained, on any backbone, round-trips through
--from-trial, export, predict and ONNX by one reader. An ensemble's folder holds one of these per member
(search.results.bundles).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from search.bundle_format import BUNDLE_FILE
from search.kinds.base import TrainedModel, saving_models
from search.kinds.registry import get_kind

MODEL_FORMAT = "transfer-search-model/2"  # 2: safetensors weights; trials keep the same folder
PREPROCESSING = "RGB, EXIF-upright, shorter side to image_size, centre crop, /255, (x - mean) / std"
CPU = torch.device("cpu")


def model_record(model: TrainedModel) -> dict[str, Any]:
    """What every bundle.json says, whatever the kind: the format, the kind, the classes and how to decode."""
    return {
        "format": MODEL_FORMAT,
        "kind": model.kind,
        "class_names": list(model.class_names),
        "image_size": model.image_size,
        "preprocessing": PREPROCESSING,
    }


def write_model(model: TrainedModel, out: Path) -> None:
    """The kind's files, then bundle.json describing them."""
    out.mkdir(parents=True, exist_ok=True)
    record = model_record(model) | saving_models(get_kind(model.kind)).write_bundle(model, out)
    (out / BUNDLE_FILE).write_text(json.dumps(record, indent=2))


def read_record(path: Path) -> dict[str, Any]:
    """A folder's bundle.json, checked to be a format this version reads (ValueError otherwise)."""
    record: dict[str, Any] = json.loads((path / BUNDLE_FILE).read_text())
    if record.get("format") != MODEL_FORMAT:
        raise ValueError(f"format {record.get('format')!r}, expected {MODEL_FORMAT!r}")
    return record


def read_model(path: Path, *, device: torch.device = CPU) -> TrainedModel:
    """The model of a folder written by `write_model`; raises what went wrong (callers word it for theirs)."""
    record = read_record(path)
    return saving_models(get_kind(record["kind"])).read_bundle(record, path, device)


def zip_model(model: TrainedModel, archive: Path) -> None:
    """The model's folder as one uncompressed zip (tensors do not compress): one artifact to upload."""
    with tempfile.TemporaryDirectory() as folder:
        write_model(model, Path(folder))
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as packed:
            for file in sorted(Path(folder).iterdir()):
                packed.write(file, file.name)


def unzip_model(archive: Path, *, device: torch.device = CPU) -> TrainedModel:
    """The model `zip_model` packed."""
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(archive) as packed:
            packed.extractall(folder)
        return read_model(Path(folder), device=device)
