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
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.tree._tree import Tree

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


def fitted_arrays(value: Any, seen: dict[int, Any] | None = None) -> Iterator[np.ndarray]:
    """The numeric arrays a fitted pipeline holds (its estimators' fitted attributes, trees' nodes), each once.

    `seen` keeps what it has walked alive, not only its id: a tree's state and an estimator's fitted
    attributes are made afresh for the walk, and once freed, the next one could reuse their ids and
    be skipped as seen (a forest of 50 trees once counted 3 numbers).
    """
    seen = {} if seen is None else seen
    if id(value) in seen:
        return
    seen[id(value)] = value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            for item in value.flat:
                yield from fitted_arrays(item, seen)
        else:
            yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from fitted_arrays(item, seen)
    elif isinstance(value, dict):
        yield from fitted_arrays(list(value.values()), seen)
    elif isinstance(value, Tree):
        yield from fitted_arrays(value.__getstate__(), seen)
    elif isinstance(value, BaseEstimator):
        yield from fitted_arrays(
            {k: v for k, v in vars(value).items() if k.endswith("_") or k in ("steps", "transformers")}, seen
        )


def fitted_numbers(pipeline: Any) -> int:
    """How many numbers a fitted pipeline holds (a tree node's record counts one per field)."""
    return sum(int(a.size) * max(1, len(a.dtype.names or ())) for a in fitted_arrays(pipeline))


def fitted_bytes(pipeline: Any) -> int:
    """What a fitted pipeline's arrays weigh, without writing a file (its skops file adds ~20 kB of schema, ~2x for a forest)."""
    return sum(int(a.nbytes) for a in fitted_arrays(pipeline))


def dump_pipeline(pipeline: Any) -> bytes:
    """A fitted pipeline as skops bytes.

    skops is imported here and in load_pipeline, not at the top: importing it lists (so imports) every
    scikit-learn estimator, 2.5 s of every command's start on 2 cores.
    """
    import skops.io as sio

    return bytes(sio.dumps(pipeline))


def load_pipeline(data: bytes, *, what: str, remedy: str) -> Any:
    """A pipeline from skops bytes, rebuilt from trusted types only; a one-line UserError for anything else."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    if data.startswith(PICKLE_MAGIC):
        raise UserError(f"{what} is a pickle, which can run code when loaded: refused; {remedy}")
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise UserError(f"{what} holds types this version does not trust ({exc}): refused; {remedy}") from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, pickle.UnpicklingError, TypeError) as exc:
        raise UserError(f"{what} is not a skops file ({type(exc).__name__}); {remedy}") from None
