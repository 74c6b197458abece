"""Exported models: a folder that needs nothing but this package, read back by `predict`.

A bundle is the folder search.kinds.model_files writes, the very one a trial keeps: `bundle.json`
(format, kind, class names, image size, preprocessing and what the kind records) beside the files
the model's kind writes (network weights; a features model's fitted scikit-learn pipeline too). An
ensemble's bundle holds one member bundle per subfolder and their weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from search.bundle_format import BUNDLE_FILE
from search.errors import UserError, exception_line
from search.kinds import TrainedModel, exporting_onnx, get_kind
from search.kinds.model_files import model_record, read_model, read_record, write_model
from search.results.ensemble_model import ENSEMBLE_KIND, EnsembleModel, ensemble_onnx_graph
from search.results.onnx_bundle import ONNX_FILE, onnx_record

CPU = torch.device("cpu")


def save_bundle(model: TrainedModel, out: Path) -> None:
    """Write a self-contained folder: the model's (search.kinds.model_files), or an ensemble's: one member
    folder per subfolder, then bundle.json with their weights."""
    if not isinstance(model, EnsembleModel):
        write_model(model, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    members = []
    for member, weight, trial in zip(model.members, model.weights, model.trials, strict=True):
        folder = f"member-trial-{trial}"
        write_model(member, out / folder)
        members.append({"folder": folder, "weight": weight, "trial": trial})
    record = model_record(model) | {"members": members}
    (out / BUNDLE_FILE).write_text(json.dumps(record, indent=2))


def save_onnx_bundle(model: TrainedModel, out: Path) -> None:
    """Write the whole model as one ONNX graph (its kind builds it) and bundle.json describing its input."""
    graph = (
        ensemble_onnx_graph(model)
        if isinstance(model, EnsembleModel)
        else exporting_onnx(get_kind(model.kind)).onnx_graph(model)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).write_bytes(graph.SerializeToString())
    record = onnx_record(model.kind, model.class_names, model.image_size)
    (out / BUNDLE_FILE).write_text(json.dumps(record, indent=2))


def read_ensemble(record: dict[str, Any], path: Path, device: torch.device) -> EnsembleModel:
    """An ensemble bundle's members, each read as the bundle it is."""
    members = record["members"]
    return EnsembleModel(
        [read_model(path / m["folder"], device=device) for m in members],
        [float(m["weight"]) for m in members],
        [int(m["trial"]) for m in members],
        tuple(record["class_names"]),
        int(record["image_size"]),
    )


def load_bundle(path: Path, *, device: torch.device = CPU) -> TrainedModel:
    """A model from a folder written by `save_bundle`; anything else is a one-line error."""
    try:
        record = read_record(path)
        if record["kind"] == ENSEMBLE_KIND:
            return read_ensemble(record, path, device)
        return read_model(path, device=device)
    except Exception as exc:  # an unknown kind (UserError) too: the folder and the way out belong in the line
        reason = str(exc).splitlines()[0][:200] if isinstance(exc, UserError) else exception_line(exc)
        raise UserError(
            f"{path} is not a model bundle this version can read ({reason}); write one with python -m search export"
        ) from None
