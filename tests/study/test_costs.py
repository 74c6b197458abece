"""What trials' models cost to run: measured once per shared trunk, kept per trial, shown against accuracy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, create_trial
from torch import nn

from search.data.feature_cache import FeatureExtractor, pool
from search.data.pixels import normalize_pixels
from search.kinds.base import InferenceParts, network_size
from search.kinds.features.kind import prefix_modules, tap_timer
from search.models.backbones import create_backbone
from search.results.costs import pareto_front, section_costs, timed
from search.study.costs import BATCHES, HEAD_BUDGET_MS, MIN_REPEATS, REPEATS, CostMeter
from search.study.record import completed_trials
from search.study.trial_facts import LATENCY_MS_B1, LATENCY_MS_B64, PARAMS, SIZE_BYTES
from tests.results_study import finished_study

CPU = torch.device("cpu")

COSTS = {PARAMS, SIZE_BYTES, LATENCY_MS_B1, LATENCY_MS_B64}  # what every timed trial records


class Counting(nn.Module):
    """A trunk that counts its calls: the meter must time a shared trunk once per key and batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(images).mean((2, 3))


def parts(trunk: nn.Module, key: object) -> InferenceParts:
    return InferenceParts(trunk, key, lambda x: x.softmax(1), parameters=112, size_bytes=448)


def test_a_shared_trunk_is_timed_once_and_every_trial_gets_its_figures() -> None:
    meter = CostMeter(16, CPU)
    trunk = Counting()
    first = meter.measure(parts(trunk, "cut"))
    calls = trunk.calls
    second = meter.measure(parts(trunk, "cut"))
    assert set(first) == set(second) == COSTS
    assert first["params"] == 112 and first["size_bytes"] == 448
    assert first["latency_ms_b1"] > 0 and first["latency_ms_b64"] > 0
    assert trunk.calls - calls == 1, "the second trial ran the trunk once, on one image, only to feed its head"
    own = Counting()
    meter.measure(parts(own, None))
    assert own.calls == calls, "a trunk of the trial's own is timed every time"


def test_a_slow_head_is_timed_fewer_times_than_a_fast_one() -> None:
    meter = CostMeter(16, CPU)
    calls = {"fast": 0, "slow": 0}

    def head(speed: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            calls[speed] += 1
            if speed == "slow":
                time.sleep(HEAD_BUDGET_MS / 1000 / 2)  # two runs fill the budget, so the third is the last
            return x

        return run

    for speed in calls:
        meter.measure(InferenceParts(Counting(), "cut", head(speed), 0, 0))
    assert calls["fast"] == sum(1 + REPEATS[batch] for batch in BATCHES)
    assert calls["slow"] == len(BATCHES) * (1 + MIN_REPEATS)


def test_one_timed_pass_gives_every_tap_its_time() -> None:
    """The features kind times all its taps in one pass: trials with other deepest layers cost no new timing."""
    backbone = create_backbone("efficientnet_lite0")
    extractor = FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=CPU)
    timer = tap_timer(extractor)
    assert timer is not None
    ready = timer(torch.zeros(2, 3, 32, 32))
    assert list(ready) == list(backbone.taps)
    assert all(earlier <= later for earlier, later in zip(ready.values(), list(ready.values())[1:], strict=False))
    passes = []

    def counted(images: torch.Tensor) -> dict[object, float]:
        passes.append(len(images))
        return dict(timer(images))

    meter = CostMeter(32, CPU)
    figures = {}
    for deepest in ("block2", "conv_head", "stem"):
        head_input = nn.AdaptiveAvgPool2d(1)  # only feeds the head: the taps' time comes from the timed passes
        figures[deepest] = meter.measure(InferenceParts(head_input, deepest, lambda x: x, 0, 0, tap_times=counted))
        assert figures[deepest][LATENCY_MS_B1] > 0
    assert sorted(set(passes)) == [1, 64] and len(passes) == 1 + 10 + 3  # a warm-up, then the repeats, once
    assert figures["stem"][LATENCY_MS_B64] < figures["conv_head"][LATENCY_MS_B64], "each trial its own tap's time"


def test_the_extraction_pass_times_the_taps_so_trials_do_not_time_them_again(tmp_path: Path) -> None:
    """A features study's extraction runs its taps at batch 64 anyway: its ready times are the batch-64
    trunk times, and the features it writes are those of the traced taps that predict later."""
    backbone = create_backbone("efficientnet_lite0")
    extractor = FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=CPU)
    images = torch.randint(0, 256, (3 * 64, 3, 32, 32), dtype=torch.uint8)
    features = [extractor(batch, extractor.layers) for batch in images.split(64)]
    measured = extractor.extraction_ms()
    assert list(measured) == [64] and list(measured[64]) == list(backbone.taps)  # the first batch is a warm-up

    traced = extractor.tapped(extractor.layers)(normalize_pixels(images[:64], extractor.mean, extractor.std))
    for layer, output in traced.items():
        assert torch.allclose(torch.from_numpy(features[0][layer]), pool(output), atol=1e-5), layer

    timer = tap_timer(extractor)
    assert timer is not None
    passes: list[int] = []

    def counted(batch: torch.Tensor) -> dict[object, float]:
        passes.append(len(batch))
        return dict(timer(batch))

    meter = CostMeter(32, CPU)
    parts = InferenceParts(
        nn.AdaptiveAvgPool2d(1), "block5", lambda x: x, 0, 0, tap_times=counted, measured_ms=measured
    )
    figures = meter.measure(parts)
    assert set(passes) == {1}  # batch 1 is timed; batch 64 came from the extraction
    assert figures[LATENCY_MS_B64] >= round(measured[64]["block5"] / 64, 3)  # the trunk at batch 64, plus the head


def test_a_trials_size_counts_the_layers_up_to_its_deepest_tap() -> None:
    backbone = create_backbone("efficientnet_lite0")
    model = backbone.tap_model()
    for deepest in ("block3", "conv_head"):
        stages = list(backbone.stages)[: list(backbone.stages).index(deepest) + 1]
        expected = sum(p.numel() for name in stages for p in backbone.stages[name].parameters())
        assert network_size(prefix_modules(model, backbone.taps[deepest]))[0] == expected, deepest
    assert network_size(prefix_modules(model, "conv_head")) == network_size(model)
    nested = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5)), nn.Linear(5, 6))
    assert network_size(prefix_modules(nested, "1.0"))[0] == (2 * 3 + 3) + (3 * 4 + 4)


def trial(number: int, accuracy: float, latency: float) -> FrozenTrial:
    made = create_trial(
        params={"x": 0.0},
        distributions={"x": FloatDistribution(0, 1)},
        value=1 - accuracy,
        user_attrs={"val_accuracy": accuracy, "latency_ms_b1": latency},
    )
    made.number = number
    return made


def test_the_pareto_front_keeps_only_trials_nothing_beats_on_both() -> None:
    trials = [
        trial(0, 0.90, 40.0),
        trial(1, 0.80, 4.0),
        trial(2, 0.85, 50.0),  # slower and less accurate than 0
        trial(3, 0.90, 45.0),  # as accurate as 0, slower
        trial(4, 0.95, 90.0),
        trial(5, 0.80, 5.0),  # as accurate as 1, slower
    ]
    assert [t.number for t in pareto_front(trials)] == [1, 0, 4]


def test_trials_without_figures_are_left_out() -> None:
    old = create_trial(params={}, distributions={}, value=0.5, user_attrs={"val_accuracy": 0.9})
    assert timed([old, trial(1, 0.8, 3.0)])[0].number == 1


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.figures: list[Path | None] = []

    def add(self, *lines: str) -> None:
        self.lines += lines

    def figure(self, path: Path | None, caption: str, *, missing: str) -> None:
        self.figures.append(path)


@pytest.mark.parametrize("space", ["features", "finetune"])
def test_a_studys_complete_trials_carry_their_costs_and_the_report_plots_them(
    space: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    study: optuna.Study = finished_study(tmp_path_factory, space).load()
    done = completed_trials(study)
    for finished in done:
        assert set(finished.user_attrs) >= COSTS, finished.user_attrs.keys()
        assert finished.user_attrs["latency_ms_b1"] > 0 and finished.user_attrs["params"] > 1000
    report = Lines()
    section_costs(report, done, tmp_path)
    assert "## Cost to run" in report.lines
    assert any("Pareto front" in line for line in report.lines)
    assert report.figures and report.figures[0] is not None and report.figures[0].stat().st_size > 1000
