"""Benchmark: a features study as the runner runs it, against its floor and against a naive loop.

Three arms fit the same trials:
- study: `run_study.py --space features` in-process (runner.prepare + runner.run) on a fresh SQLite
  study, fresh caches and artifact folder: decoding, one extraction, every trial with its
  bookkeeping (storage writes, plots, artifacts, cost timings, the kept best pipeline) and the test
  evaluation at the end;
- floor: what no features study can avoid: decode and extract once into fresh caches, then fit the
  study's trials' configs bare (train_features, same split, same seeds);
- naive: what a plain Optuna objective does: inside every trial decode the data, build the
  pretrained network, run it over every image for the layers that trial taps, then fit.
Prints the three wall times, `study / floor` (a line with the word floor) and `naive / study` (a line
with the word naive).

    python bench/bench_features.py [--data digits|DIR] [--image-size 64] [--trials 30] [--no-naive]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from search.allocator import keep_freed_memory
from search.data.dataset import Dataset, dataset_of, decode_source, decoded_batches
from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
from search.data.sources import ImageSource, open_source
from search.kinds.features.trainer import train_features
from search.models.backbones import create_backbone
from search.study import runner
from search.study.record import record_of
from search.study.spec import StudySpec
from search.training.configs import FeaturesConfig, config_from_dict
from search.training.core import NullReporter, TrainSettings

CPU = torch.device("cpu")
BACKBONE = "efficientnet_lite0"


def extractor() -> FeatureExtractor:
    backbone = create_backbone(BACKBONE)
    return FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=CPU)


def run_study(data: str, image_size: int, trials: int, folder: Path) -> tuple[float, optuna.Study]:
    spec = StudySpec(
        space="features",
        trials=trials,
        data=data,
        image_size=image_size,
        storage=f"sqlite:///{folder / 'optuna.db'}",
        artifact_dir=folder / "artifacts",
        cache_dir=folder / "cache",
        study_name="bench",
        device="cpu",
    )
    started = time.perf_counter()
    runner.run(runner.prepare(spec))
    return time.perf_counter() - started, optuna.load_study(study_name="bench", storage=spec.storage)


def fitted_configs(study: optuna.Study) -> list[tuple[int, FeaturesConfig]]:
    """(trial number, config) of every trial that reached its fit."""
    return [
        (t.number, config_from_dict(FeaturesConfig, t.user_attrs["config"]))
        for t in study.trials
        if "config" in t.user_attrs
    ]


def with_study_split(data: Dataset, study: optuna.Study) -> Dataset:
    split = record_of(study).split
    assert split is not None, "the study stored no split"
    return data.with_split(split)


def run_floor(
    source: ImageSource, study: optuna.Study, configs: list[tuple[int, FeaturesConfig]], image_size: int
) -> float:
    settings = TrainSettings(max_epochs=1, patience=1, device=CPU, seed=0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        taps = extractor()
        key = FeatureKey(BACKBONE, "imagenet", image_size, source.fingerprint(), len(source), taps.mean, taps.std)
        cache = FeatureCache(Path(folder), key, taps)
        good = cache.ensure(lambda: decoded_batches(source, image_size=image_size, cache_dir=Path(folder)))
        data = with_study_split(dataset_of(source, good, None, image_size=image_size), study)
        for number, config in configs:
            train_features(config, data, cache.layer, NullReporter(), dataclasses.replace(settings, seed=number))
    return time.perf_counter() - started


def run_naive(
    source: ImageSource, study: optuna.Study, configs: list[tuple[int, FeaturesConfig]], image_size: int
) -> float:
    settings = TrainSettings(max_epochs=1, patience=1, device=CPU, seed=0)
    started = time.perf_counter()
    for number, config in configs:
        data = with_study_split(decode_source(source, image_size=image_size), study)  # loaded inside the objective
        taps = extractor()  # the pretrained network built inside the objective
        pooled: dict[str, list[np.ndarray]] = {layer: [] for layer in config.layers}
        for batch in data.images.split(64):
            for layer, values in taps(batch, config.layers).items():
                pooled[layer].append(values)
        features = {layer: np.concatenate(chunks) for layer, chunks in pooled.items()}
        train_features(config, data, features.__getitem__, NullReporter(), dataclasses.replace(settings, seed=number))
    return time.perf_counter() - started


def main() -> None:
    keep_freed_memory()  # as every study process does: both arms run with the same allocator
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="digits, or a folder with one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive arm (minutes at 224 px)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = open_source(args.data, root=Path("studies/datasets"))
    print(
        f"{args.trials} features trials on {Path(args.data).name} ({len(source)} images) at {args.image_size}px, "
        f"{torch.get_num_threads()} CPU threads"
    )
    with tempfile.TemporaryDirectory() as folder:
        study_seconds, study = run_study(args.data, args.image_size, args.trials, Path(folder))
        configs = fitted_configs(study)
        print(f"study (runner, all bookkeeping):       {study_seconds:7.1f} s")
        floor = run_floor(source, study, configs, args.image_size)
        print(f"floor (decode, extract, bare fits):    {floor:7.1f} s")
        naive = None if args.no_naive else run_naive(source, study, configs, args.image_size)
    if naive is not None:
        print(f"naive (extract inside every trial):    {naive:7.1f} s")
    print(f"study / floor: {study_seconds / floor:.2f}x")
    if naive is not None:
        print(f"naive / study: {naive / study_seconds:.1f}x")


if __name__ == "__main__":
    main()
