"""Benchmark: the features space with the on-disk feature cache against re-extracting in every trial.

Both arms fit the same trials (same configs from the real features space, same seeds) on the
bundled digits. The cached arm does what the runner does: stream the images once through the
backbone into a fresh feature cache, then every trial reads its layers from it. The naive arm does
what a plain Optuna objective does: inside every trial, load the data, build the pretrained
network, run it over every image for the layers that trial taps, then fit. Prints both wall times
and their ratio.

    python bench/bench_features.py [--trials 30] [--image-size 64]
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

from search.data.dataset import Dataset, dataset_of, decode_source, decoded_batches, stratified_split
from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
from search.data.sources import ImageSource, open_source
from search.models.backbones import create_backbone
from search.training.configs import FeaturesConfig, SpaceContext
from search.training.core import NullReporter, TrainSettings
from search.training.features import train_features
from spaces import get_space

CPU = torch.device("cpu")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def with_split(data: Dataset) -> Dataset:
    return dataclasses.replace(data, split=stratified_split(data.labels.numpy(), data.split, data.class_names, seed=0))


def sample_configs(layers: tuple[str, ...], train_size: int, count: int) -> list[FeaturesConfig]:
    """Configs drawn at random from the real features space (a draw with no layer is drawn again)."""
    ctx = SpaceContext("efficientnet_lite0", (), {}, 10, train_size, "cpu", feature_layers=layers)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = get_space("features")
    configs: list[FeaturesConfig] = []
    while len(configs) < count:
        trial = study.ask()
        try:
            configs.append(space.suggest(trial, ctx))
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, 0.0)
    return configs


def extractor() -> FeatureExtractor:
    backbone = create_backbone("efficientnet_lite0")
    return FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=CPU)


def run_cached(configs: list[FeaturesConfig], source: ImageSource, settings: TrainSettings, image_size: int) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        taps = extractor()
        key = FeatureKey(
            "efficientnet_lite0", "imagenet", image_size, source.fingerprint(), len(source), taps.mean, taps.std
        )
        cache = FeatureCache(Path(folder), key, taps)
        good = cache.ensure(lambda: decoded_batches(source, image_size=image_size, batch_size=64))
        data = with_split(dataset_of(source, good, None, image_size=image_size))
        for number, config in enumerate(configs):
            trial_settings = dataclasses.replace(settings, seed=number)
            train_features(config, data, cache.layer, NullReporter(), trial_settings)
    return time.perf_counter() - started


def run_naive(configs: list[FeaturesConfig], source: ImageSource, settings: TrainSettings, image_size: int) -> float:
    started = time.perf_counter()
    for number, config in enumerate(configs):
        data = with_split(decode_source(source, image_size=image_size))  # loaded inside the objective
        taps = extractor()  # the pretrained network built inside the objective
        pooled: dict[str, list[np.ndarray]] = {layer: [] for layer in config.layers}
        for batch in data.images.split(64):
            for layer, values in taps(batch, config.layers).items():
                pooled[layer].append(values)
        features = {layer: np.concatenate(chunks) for layer, chunks in pooled.items()}
        trial_settings = dataclasses.replace(settings, seed=number)
        train_features(config, data, features.__getitem__, NullReporter(), trial_settings)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    source = open_source("digits", root=Path("studies/datasets"))
    settings = TrainSettings(max_epochs=1, patience=1, device=CPU, seed=0)
    layers = create_backbone("efficientnet_lite0").feature_layers
    train_size = int((with_split(decode_source(source, image_size=32)).split == 0).sum())
    configs = sample_configs(layers, train_size, args.trials)
    print(f"{args.trials} features trials on digits at {args.image_size}px, {torch.get_num_threads()} CPU threads")
    cached = run_cached(configs, source, settings, args.image_size)
    print(f"cached (extract once, then read):     {cached:7.1f} s")
    naive = run_naive(configs, source, settings, args.image_size)
    print(f"naive (extract inside every trial):   {naive:7.1f} s")
    print(f"speed-up: {naive / cached:.1f}x")


if __name__ == "__main__":
    main()
