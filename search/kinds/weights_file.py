"""A bundle's network tensors as one safetensors file: no pickle, so reading a shared model runs no code."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from search.errors import UserError, exception_line

WEIGHTS_FILE = "weights.safetensors"


def write_weights(network: nn.Module, folder: Path) -> None:
    """Every tensor of the network's state (tied ones once), under its state-dict name."""
    save_model(network, str(folder / WEIGHTS_FILE))


def read_weights(network: nn.Module, folder: Path) -> None:
    """Fill a network of the bundle's shape with its tensors; a missing, damaged or mismatched file is one line."""
    path = folder / WEIGHTS_FILE
    try:
        load_model(network, str(path), strict=True, device="cpu")
    except (OSError, RuntimeError, SafetensorError) as exc:  # RuntimeError: names or shapes that do not match
        raise UserError(
            f"the bundle's weights {path.name} refused: not this network's safetensors ({exception_line(exc)})"
        ) from None
