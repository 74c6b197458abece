"""What a complete trial's model costs to run, kept as its user attributes: parameters, bytes, latency.

Latency is milliseconds per image at batch 1 and batch 64 on the study's device, the median of
repeated timed runs after a warm-up. A trunk that trials share (the stages up to a cut, the taps up
to a deepest layer) is timed once per process and key; the trial's own head or pipeline is timed
every time. Where one pass can time every key (a features study's taps: the moment each tapped
layer's output is ready), it does, so a features study pays for one trunk timing, not one per layer;
where the pass that extracted the study's features already timed a batch size, that timing is used.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

import torch

from search.kinds.base import InferenceParts
from search.study import trial_facts as attr

BATCHES = (1, 64)
REPEATS = {1: 10, 64: 3}  # timed runs per batch size; batch 1 runs first, after one warm-up run
MIN_REPEATS = 3
# A trial's own head is timed every trial: once its runs add up to this, more of them would cost more
# than they tell (a forest's predict at batch 1 is ~50 ms of joblib threads: 15 runs were most of a
# features trial's bookkeeping). Shared trunks are timed once and get every repeat.
HEAD_BUDGET_MS = 50.0
LATENCY_ATTRS = {1: attr.LATENCY_MS_B1, 64: attr.LATENCY_MS_B64}  # per batch size timed


def median_ms(
    run: Callable[[], Any], repeats: int, device: torch.device, *, warm_up: bool = True, budget_ms: float | None = None
) -> float:
    """The median wall time of `run` in milliseconds, after a warm-up run (lazy init, caches, allocator).

    With a budget, the runs stop early once at least MIN_REPEATS of them have taken that long together.
    """

    def timed() -> float:
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) * 1000

    if warm_up:
        timed()
    times: list[float] = []
    while len(times) < repeats:
        times.append(timed())
        if budget_ms is not None and len(times) >= MIN_REPEATS and sum(times) >= budget_ms:
            break
    return statistics.median(times)


class CostMeter:
    """Times trials' models on one device and image size; remembers shared trunks' timings."""

    def __init__(self, image_size: int, device: torch.device) -> None:
        self.image_size = image_size
        self.device = device
        self._trunk_ms: dict[tuple[Hashable, int], float] = {}

    def _images(self, batch: int) -> torch.Tensor:
        """Standardised random pixels: the cost of a network does not depend on what the images show."""
        return torch.rand(batch, 3, self.image_size, self.image_size, device=self.device) * 2 - 1

    @torch.no_grad()
    def measure(self, parts: InferenceParts) -> dict[str, float | int]:
        """params, size_bytes and latency_ms_b1/_b64 (per image) of one trial's model."""
        costs: dict[str, float | int] = {attr.PARAMS: parts.parameters, attr.SIZE_BYTES: parts.size_bytes}
        trunk = parts.trunk.to(self.device).eval()
        # The head's input, from one image: a batch repeats it, since a head's cost hardly depends on the values.
        single = trunk(self._images(1))
        for batch in BATCHES:
            key = (parts.trunk_key, batch)
            for measured, ms in parts.measured_ms.get(batch, {}).items():
                self._trunk_ms.setdefault((measured, batch), ms)
            if parts.tap_times is not None and parts.trunk_key is not None and key not in self._trunk_ms:
                self._time_every_tap(parts.tap_times, batch)
            trunk_ms = self._trunk_ms.get(key) if parts.trunk_key is not None else None
            if trunk_ms is None:
                warm_up = batch == BATCHES[0]  # the first batch size warms the model up for the others
                trunk_ms = median_ms(partial(trunk, self._images(batch)), REPEATS[batch], self.device, warm_up=warm_up)
                if parts.trunk_key is not None:
                    self._trunk_ms[key] = trunk_ms
            head_input = single.repeat(batch, *([1] * (single.dim() - 1)))
            head_ms = median_ms(partial(parts.head, head_input), REPEATS[batch], self.device, budget_ms=HEAD_BUDGET_MS)
            costs[LATENCY_ATTRS[batch]] = round((trunk_ms + head_ms) / batch, 3)
        return costs

    def _time_every_tap(self, tap_times: Callable[[torch.Tensor], dict[Hashable, float]], batch: int) -> None:
        """Every trunk key's time from one timed pass per repeat: a features study's taps cost one timing, not nine."""
        images = self._images(batch)
        if batch == BATCHES[0]:
            tap_times(images)  # warm-up
        runs = [tap_times(images) for _ in range(REPEATS[batch])]
        for key in runs[0]:
            self._trunk_ms[(key, batch)] = statistics.median(run[key] for run in runs)
