"""Pooled backbone features on disk: extracted once, shared by every trial, study and local worker.

One folder per (backbone, weights, pixel normalisation, image size, data fingerprint) holds one file per tapped layer,
float32 [items, 2, channels]: the global average and the global max pool of that layer's output for
every item of the data, in order, beside a record of which items could be decoded, all shared the way
search.data.shared_files shares files. Features do not depend on the split, so one file serves every
split and every study of the same data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from search.data.pixels import normalize_pixels
from search.data.shared_files import folder_name, key_record, locked, publish, read_vouched, temporary
from search.errors import UserError
from search.progress import progress_bar

log = logging.getLogger(__name__)

ITEMS_FILE = "items.npy"  # bool per source item: decoded (True) or skipped as unreadable
Batches = Callable[[], Iterable[tuple[np.ndarray, torch.Tensor]]]  # (source indices, uint8 images)


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
        return key_record(asdict(self))

    def folder_name(self) -> str:
        return folder_name(f"{self.backbone}-{self.image_size}px", self.record())


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
            # modules whose forward branches on shapes (a transformer's embedding) are traced as one call
            leaves = list({type(m) for m in self.model.modules() if getattr(m, "trace_as_leaf", False)})
            self._traced[layers] = create_feature_extractor(
                self.model, return_nodes=nodes, tracer_kwargs={"leaf_modules": leaves}
            )
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
        with locked(self.folder, "feature cache"):
            items = self._read(ITEMS_FILE)
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
        tokens = {layer: temporary(self.folder, f"{layer}.npy") for layer in layers}
        outputs: dict[str, np.memmap] = {}  # written batch by batch: memory stays one batch deep
        good = np.zeros(self.key.items, dtype=bool)
        try:
            with progress_bar(f"extracting {self.key.backbone} features", self.key.items) as advance:
                for indices, images in batches():
                    for layer, values in self.extractor(images, layers).items():
                        if layer not in outputs:
                            outputs[layer] = np.lib.format.open_memmap(
                                tokens[layer],
                                mode="w+",
                                dtype=np.float32,
                                shape=(self.key.items, *values.shape[1:]),
                            )
                        outputs[layer][indices] = values
                    good[indices] = True
                    advance(len(indices))
            if not good.any():
                raise UserError(f"no image of the data could be decoded for {self.folder}")
            for layer in layers:
                outputs[layer].flush()
                del outputs[layer]
                publish(tokens[layer], self.folder / f"{layer}.npy", self.key.record())
            items_token = temporary(self.folder, ITEMS_FILE)
            np.save(items_token, good)
            publish(items_token, self.folder / ITEMS_FILE, self.key.record())
        finally:
            for token in tokens.values():
                token.unlink(missing_ok=True)
        return good

    def _read(self, name: str) -> np.ndarray | None:
        return read_vouched(self.folder / name, self.key.record(), rows=self.key.items)
