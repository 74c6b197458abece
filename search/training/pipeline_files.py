"""Fitted scikit-learn pipelines as files that cannot run code when loaded: skops, never pickle.

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

import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from search.errors import UserError

SKOPS_SUFFIX = ".skops"
TRUSTED_TYPES = (  # what skops does not trust by default but our fitted pipelines hold
    "sklearn.calibration._CalibratedClassifier",  # an SVM's Platt scaling (CalibratedClassifierCV)
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",  # a random forest's trees
)
PICKLE_MAGIC = (b"\x80", b"(", b"c")  # how pickle streams start (protocol 2+, protocol 0 tuples and globals)


def dump_pipeline(pipeline: Any) -> bytes:
    return bytes(sio.dumps(pipeline))


def load_pipeline(data: bytes, *, what: str) -> Any:
    """A pipeline from skops bytes, rebuilt from trusted types only; a one-line UserError for anything else."""
    if data.startswith(PICKLE_MAGIC):
        raise UserError(f"{what} is a pickle, which can run code when loaded; it was refused (re-export it)")
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise UserError(f"{what} holds types this version does not trust ({exc}); it was refused") from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, pickle.UnpicklingError, TypeError) as exc:
        raise UserError(f"{what} is not a skops file ({type(exc).__name__}); re-export it") from None
