"""Exported ONNX models read back and run with onnxruntime: numpy, PIL and onnxruntime only, no torch.

An ONNX bundle is a folder holding `model.onnx` (the whole model: pixel normalisation, network or taps
and pooling, head or scikit-learn pipeline) beside `bundle.json` (format, kind, class names, image
size, how to decode). It runs anywhere onnxruntime does: a web service, a phone, a laptop without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.bundle_format import BUNDLE_FILE
from search.errors import UserError, exception_line

ONNX_FORMAT = "transfer-search-onnx/1"
ONNX_FILE = "model.onnx"
INPUT = "images"  # uint8 [N, 3, S, S], decoded as search.data.decode does
PROBABILITIES = "probabilities"
BATCH = 64
DECODING = "RGB, EXIF-upright, shorter side to image_size, centre crop, uint8 CHW; normalisation is inside the graph"


@dataclass
class OnnxModel:
    """An exported model as an onnxruntime session; predicts from decoded uint8 pixels."""

    session: Any  # onnxruntime.InferenceSession
    class_names: tuple[str, ...]
    image_size: int
    kind: str

    def predict_pixels(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 3, S, S] -> float32 class probabilities [N, classes], a batch at a time."""
        chunks = [
            self.session.run([PROBABILITIES], {INPUT: np.ascontiguousarray(images[start : start + BATCH])})[0]
            for start in range(0, len(images), BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), np.float32)


def is_onnx_bundle(path: Path) -> bool:
    try:
        return bool(json.loads((path / BUNDLE_FILE).read_text()).get("format") == ONNX_FORMAT)
    except (OSError, ValueError):
        return False


def onnx_record(kind: str, class_names: tuple[str, ...], image_size: int) -> dict[str, Any]:
    return {
        "format": ONNX_FORMAT,
        "kind": kind,
        "class_names": list(class_names),
        "image_size": image_size,
        "model": ONNX_FILE,
        "input": f"{INPUT}: {DECODING}",
        "output": f"{PROBABILITIES}: float32 [N, classes] in class_names order",
    }


def load_onnx_bundle(path: Path, *, threads: int = 0) -> OnnxModel:
    """The model of an ONNX export folder; anything else is a one-line error. threads 0: onnxruntime's choice."""
    try:
        import onnxruntime

        record = json.loads((path / BUNDLE_FILE).read_text())
        if record.get("format") != ONNX_FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {ONNX_FORMAT!r}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            str(path / record["model"]), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = {output.name for output in session.get_outputs()}
        if PROBABILITIES not in names or INPUT not in {i.name for i in session.get_inputs()}:
            raise ValueError(f"the graph has no {INPUT!r} input or {PROBABILITIES!r} output")
        return OnnxModel(session, tuple(record["class_names"]), int(record["image_size"]), str(record["kind"]))
    except Exception as exc:
        reason = exception_line(exc)
        raise UserError(
            f"{path} is not an ONNX bundle this version can read ({reason}); "
            "write one with python -m search export --format onnx"
        ) from None
