"""Fitted scikit-learn pipelines as files that cannot run code when loaded: skops (or ONNX), never pickle.

A features trial's checkpoint and a features bundle carry a fitted pipeline. Pickle would let such a
file, received from anyone, run whatever it likes on load; skops stores the same objects as data and
rebuilds only types it is told to trust. Ours are the scikit-learn estimators skops trusts by default
plus the few internal types `build_pipeline`'s classifiers hold (listed below); anything else is
refused with one line instead of loaded.
"""

from __future__ import annotations

import pickle
import zipfile
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.base import BaseEstimator
from sklearn.tree._tree import Tree
from skops.io.exceptions import UntrustedTypesFoundException

from search.errors import UserError

SKOPS_SUFFIX = ".skops"
TRUSTED_TYPES = (  # what skops does not trust by default but our fitted pipelines hold
    "sklearn.calibration._CalibratedClassifier",  # an SVM's Platt scaling (CalibratedClassifierCV)
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",  # a random forest's trees
)
ML_OPSET = 3  # skl2onnx's classical-ML operators (trees, SVMs, scalers)
PICKLE_MAGIC = (b"\x80", b"(", b"c")  # how pickle streams start (protocol 2+, protocol 0 tuples and globals)


def pipeline_to_onnx(pipeline: Any, width: int, *, input_name: str, opset: int) -> Any:
    """The fitted pipeline as an ONNX graph (skl2onnx): float features [N, width] in, `probabilities` out."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    return to_onnx(
        pipeline,
        initial_types=[(input_name, FloatTensorType([None, width]))],
        options={id(pipeline[-1]): {"zipmap": False}},  # a plain [N, classes] tensor, not a list of dicts
        target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
    )


def fitted_numbers(value: Any, seen: set[int] | None = None) -> int:
    """How many numbers a fitted pipeline holds: its arrays, trees' nodes and values, walked once each."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return sum(fitted_numbers(item, seen) for item in value.flat)
        return int(value.size) * max(1, len(value.dtype.names or ()))
    if isinstance(value, list | tuple):
        return sum(fitted_numbers(item, seen) for item in value)
    if isinstance(value, dict):
        return sum(fitted_numbers(item, seen) for item in value.values())
    if isinstance(value, Tree):
        return fitted_numbers(value.__getstate__(), seen)
    if isinstance(value, BaseEstimator):
        fitted = {k: v for k, v in vars(value).items() if k.endswith("_") or k in ("steps", "transformers")}
        return fitted_numbers(fitted, seen)
    return 0


def dump_pipeline(pipeline: Any) -> bytes:
    return bytes(sio.dumps(pipeline))


def load_pipeline(data: bytes, *, what: str, remedy: str) -> Any:
    """A pipeline from skops bytes, rebuilt from trusted types only; a one-line UserError for anything else."""
    if data.startswith(PICKLE_MAGIC):
        raise UserError(f"{what} is a pickle, which can run code when loaded: refused; {remedy}")
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise UserError(f"{what} holds types this version does not trust ({exc}): refused; {remedy}") from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, pickle.UnpicklingError, TypeError) as exc:
        raise UserError(f"{what} is not a skops file ({type(exc).__name__}); {remedy}") from None
