"""Pooled backbone features on disk: extracted once, shared by every trial, study and local worker.

One folder per (backbone, weights, pixel normalisation, image size, data fingerprint) holds one file per tapped layer,
float32 [items, 2, channels]: the global average and the global max pool of that layer's output for
every item of the data, in order, beside a record of which items could be decoded, all shared the way
search.data.shared_files shares files. Features do not depend on the split, so one file serves every
split and every study of the same data.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


class _DeepestReached(Exception):
    """Raised by the deepest tap's hook: the network after it is not needed."""


@dataclass(frozen=True)
class TokenLayout:
    """Where a transformer's token maps keep their class/register tokens (search.models.backbones.Backbone)."""

    prefix: int = 0  # tokens before the patches; 0: not a token map
    class_token: bool = False  # the first of them is a class token

    @classmethod
    def of(cls, backbone: Any) -> TokenLayout:
        return cls(backbone.prefix_tokens, backbone.class_token)


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
    tokens: TokenLayout = TokenLayout()  # how a transformer's tokens pool

    def record(self) -> dict[str, object]:
        fields = asdict(self)
        if self.tokens == TokenLayout():  # a CNN's key reads as it did before transformers pooled their own way
            del fields["tokens"]
        return key_record(fields)

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
        tokens: TokenLayout = TokenLayout(),
    ) -> None:
        self.model = model.to(device).eval()
        self.taps = taps
        self.mean, self.std = mean, std
        self.tokens = tokens
        self.device = device
        self._traced: dict[tuple[str, ...], nn.Module] = {}  # tracing takes a third of a second: once per layer set
        # per batch size, one {layer: ms at which its output was ready} for each batch the extraction ran
        self._extraction_ready: dict[int, list[dict[str, float]]] = {}
        self._tap_modules = self._modules_of(taps)

    def _modules_of(self, taps: dict[str, str]) -> dict[str, nn.Module] | None:
        """Each tap's module, or None when a tap is not a module's output (nothing to hook)."""
        try:
            return {layer: self.model.get_submodule(node) for layer, node in taps.items()}
        except AttributeError:
            return None

    @property
    def hookable(self) -> bool:
        return self._tap_modules is not None

    @torch.no_grad()
    def ready_times(
        self, x: torch.Tensor, layers: tuple[str, ...] | None = None
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """One pass of normalised images up to the deepest of `layers`: when each layer's output was ready
        (ms from the start) and the outputs. Needs `hookable`.

        A timed pass is the extraction itself, so a study's latency figures cost no extra pass over its taps.
        """
        modules = self._tap_modules
        assert modules is not None, "ready_times needs hookable taps"
        wanted = layers or self.layers
        deepest = max(wanted, key=self.layers.index)
        ready: dict[str, float] = {}
        outputs: dict[str, torch.Tensor] = {}

        def noting(layer: str) -> Callable[..., None]:
            def note(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                ready.setdefault(layer, (time.perf_counter() - started) * 1000)
                outputs.setdefault(layer, output)
                if layer == deepest:
                    raise _DeepestReached

            return note

        handles = [
            modules[layer].register_forward_hook(noting(layer))
            for layer in self.layers[: self.layers.index(deepest) + 1]
        ]
        started = time.perf_counter()
        try:
            self.model(x)
        except _DeepestReached:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return ready, {layer: outputs[layer] for layer in wanted}

    def extraction_ms(self) -> dict[int, dict[Hashable, float]]:
        """Per batch size the extraction ran at least twice: the median ms at which each tap was ready, the
        first batch (a warm-up) left out. Empty when the features came from the cache."""
        medians: dict[int, dict[Hashable, float]] = {
            batch: {layer: statistics.median(run[layer] for run in runs[1:]) for layer in runs[0]}
            for batch, runs in self._extraction_ready.items()
            if len(runs) > 1
        }
        return medians

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
        """uint8 images [B, 3, S, S] -> per layer float32 [B, 2, C] (average and max pool).

        Hookable taps run as a timed pass whose ready times are kept (`extraction_ms`); others traced.
        """
        x = normalize_pixels(images.to(self.device), self.mean, self.std)
        if self.hookable:
            ready, outputs = self.ready_times(x, layers)
            if set(layers) == set(self.layers):  # a partial extraction times only some taps
                self._extraction_ready.setdefault(len(images), []).append(ready)
        else:
            outputs = self.tapped(layers)(x)
        return {layer: pool(output, self.tokens).cpu().numpy() for layer, output in outputs.items()}


def pool(output: torch.Tensor, tokens: TokenLayout = TokenLayout()) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2, C] global average and max; a [B, C] vector (fc layers) is both.

    A transformer's token map [B, C, T, 1] pools to the mean patch token and the class token: what a
    linear probe on a ViT reads (the class and register tokens are not patches to average).
    """
    if output.dim() == 2:
        return torch.stack([output, output], dim=1).float()
    flat = output.float().flatten(2)
    if tokens.prefix:
        patches = flat[:, :, tokens.prefix :]
        second = flat[:, :, 0] if tokens.class_token else patches.amax(2)
        return torch.stack([patches.mean(2), second], dim=1)
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
