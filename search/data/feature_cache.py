"""Pooled backbone features on disk: extracted once, shared by every trial, study and local worker.

One folder per (backbone, weights, pixel normalisation, image size, data fingerprint) holds one file per tapped layer,
float32 [items, 2, channels]: the global average and the global max pool of that layer's output for
every item of the data, in order, beside a record of which items could be decoded. Files are written
under a temporary name and renamed into place while holding a file lock, and each file's checksum is
kept beside it, so a truncated or foreign file is rebuilt, never silently used. Features do not
depend on the split, so one file serves every split and every study of the same data.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from search.data.pixels import normalize_pixels
from search.errors import UserError

log = logging.getLogger(__name__)

ITEMS_FILE = "items.npy"  # bool per source item: decoded (True) or skipped as unreadable
Batches = Callable[[], Iterable[tuple[np.ndarray, torch.Tensor, list[str]]]]  # (indices, uint8 images, bad reasons)


@dataclass(frozen=True)
class FeatureKey:
    """What the features of a layer depend on; a change in any of them means other features."""

    backbone: str
    weights: str
    image_size: int
    fingerprint: str  # of the data's items, labels and file sizes
    items: int
    mean: tuple[float, ...]  # the pixel normalisation fed to the backbone: caches made under another are not reused
    std: tuple[float, ...]

    def record(self) -> dict[str, object]:
        """The key as it reads back from JSON (tuples as lists), so a stored key compares equal to its own."""
        return dict(json.loads(json.dumps(asdict(self))))

    def folder_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.backbone}-{self.image_size}px-{digest}"


class FeatureExtractor:
    """A network's taps, globally pooled: torchvision's feature extraction cut after the deepest layer asked for."""

    def __init__(
        self,
        model: nn.Module,
        taps: dict[str, str],
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
    ) -> None:
        self.model = model.to(device).eval()
        self.taps = taps
        self.mean, self.std = mean, std
        self.device = device
        self._traced: dict[tuple[str, ...], nn.Module] = {}  # tracing takes a third of a second: once per layer set

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.taps)

    def tapped(self, layers: tuple[str, ...]) -> nn.Module:
        """The network cut after the deepest of `layers`, returning {layer: output} (traced once per layer set)."""
        if layers not in self._traced:
            nodes = {self.taps[layer]: layer for layer in layers}
            self._traced[layers] = create_feature_extractor(self.model, return_nodes=nodes)
        return self._traced[layers]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
        """uint8 images [B, 3, S, S] -> per layer float32 [B, 2, C] (average and max pool)."""
        x = normalize_pixels(images.to(self.device), self.mean, self.std)
        return {layer: pool(output).cpu().numpy() for layer, output in self.tapped(layers)(x).items()}


def pool(output: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2, C] global average and max; a [B, C] vector (fc layers) is both."""
    if output.dim() == 2:
        return torch.stack([output, output], dim=1).float()
    flat = output.float().flatten(2)
    return torch.stack([flat.mean(2), flat.amax(2)], dim=1)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine: one fills the cache, the others wait, then read."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FeatureCache:
    """Per-layer pooled features of one dataset, read from disk or extracted in one streamed pass."""

    def __init__(self, root: Path, key: FeatureKey, extractor: FeatureExtractor) -> None:
        self.key = key
        self.extractor = extractor
        self.folder = root / key.folder_name()
        self.extractions = 0  # streamed passes of the backbone over the data: tests count these
        self.good: np.ndarray | None = None  # which source items were decoded, known after `ensure`
        self._files: dict[str, np.ndarray] = {}  # memory-mapped, checked once by `ensure`
        self._loaded: dict[str, np.ndarray] = {}

    def ensure(self, batches: Batches, layers: tuple[str, ...] | None = None) -> np.ndarray:
        """Make every layer's file valid (extracting the missing ones together); return the decoded-items mask."""
        layers = layers or self.extractor.layers
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the feature cache {self.folder}: {exc.strerror}; pass --cache-dir"
            ) from None
        with _locked(self.folder / ".lock"):
            items = self._read(ITEMS_FILE, shape=(self.key.items,))
            for layer in layers if items is not None else ():
                found = self._read(f"{layer}.npy")
                if found is not None:
                    self._files[layer] = found
            missing = [layer for layer in layers if layer not in self._files]
            if missing:
                items = self._extract(batches, tuple(missing))
                self._files |= {layer: np.load(self.folder / f"{layer}.npy", mmap_mode="r") for layer in missing}
        assert items is not None
        self.good = items.astype(bool)
        return self.good

    def layer(self, name: str) -> np.ndarray:
        """float32 [decoded items, 2, C] for one layer (after `ensure`), kept in memory once read."""
        if self.good is None:
            raise RuntimeError("FeatureCache.layer before ensure")
        good = self.good
        if name not in self._loaded:
            array = self._files.get(name)
            if array is None:
                array = self._read(f"{name}.npy")
            if array is None:
                raise UserError(f"the feature cache lost {self.folder / name}.npy while in use; run the command again")
            self._loaded[name] = np.ascontiguousarray(array[good])
        return self._loaded[name]

    def _extract(self, batches: Batches, layers: tuple[str, ...]) -> np.ndarray:
        log.info("extracting %s features of %d images (%s)", self.key.backbone, self.key.items, ", ".join(layers))
        self.extractions += 1
        tokens = {layer: f".{layer}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy" for layer in layers}
        outputs: dict[str, np.memmap] = {}  # written batch by batch: memory stays one batch deep
        good = np.zeros(self.key.items, dtype=bool)
        try:
            for indices, images, _ in batches():
                if not len(indices):
                    continue
                for layer, values in self.extractor(images, layers).items():
                    if layer not in outputs:
                        outputs[layer] = np.lib.format.open_memmap(
                            self.folder / tokens[layer],
                            mode="w+",
                            dtype=np.float32,
                            shape=(self.key.items, *values.shape[1:]),
                        )
                    outputs[layer][indices] = values
                good[indices] = True
            if not good.any():
                raise UserError(f"no image of the data could be decoded for {self.folder}")
            for layer in layers:
                outputs[layer].flush()
                del outputs[layer]
                self._publish(self.folder / tokens[layer], f"{layer}.npy")
            items_token = self.folder / f".items.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy"
            np.save(items_token, good)
            self._publish(items_token, ITEMS_FILE)
        finally:
            for token in tokens.values():
                (self.folder / token).unlink(missing_ok=True)
        return good

    def _publish(self, written: Path, name: str) -> None:
        """Rename into place, then record the checksum that vouches for it (written the same way)."""
        record = {"key": self.key.record(), "sha256": _sha256(written)}
        target = self.folder / name
        os.replace(written, target)
        record_token = self.folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp.json"
        record_token.write_text(json.dumps(record))
        os.replace(record_token, target.with_suffix(".json"))

    def _read(self, name: str, *, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The file when its record vouches for it (same key, same checksum); None, with a warning, otherwise."""
        path = self.folder / name
        if not path.exists():
            return None
        try:
            record = json.loads(path.with_suffix(".json").read_text())
            if record.get("key") != self.key.record() or record.get("sha256") != _sha256(path):
                raise ValueError("checksum or key does not match")
            array = np.load(path, mmap_mode="r")
            if array.shape[0] != self.key.items or (shape is not None and array.shape != shape):
                raise ValueError(f"shape {array.shape}")
        except (OSError, ValueError) as exc:
            log.warning("rebuilding feature cache file %s: %s", path, exc)
            return None
        return np.asarray(array)
