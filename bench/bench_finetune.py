"""Benchmark: the runner's shared data and frozen-prefix cache against a naive per-trial loop.

Both arms train the same trials (same configs, same seeds) from the finetune space with the
backbone frozen or one stage unfrozen and no augmentation: the trials the cache is for. The naive
arm does what an optuna-examples-style objective does: decode the data inside every trial and run
the whole frozen backbone on every batch of every epoch. Prints both wall times and their ratio.

    python bench/bench_finetune.py [--data digits|DIR] [--image-size N] [--trials 10] [--epochs 3]

Without --image-size, the size a finetune study of that data would use on this device.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import optuna
import torch

from search.allocator import keep_freed_memory
from search.data.dataset import Dataset, decode_source, stratified_split
from search.data.sizing import typical_size
from search.data.sources import ImageSource, open_source
from search.kinds import get_kind
from search.kinds.finetune.trainer import train_finetune
from search.models.backbones import Backbone, create_backbone
from search.models.prefix_cache import FrozenPrefixCache
from search.training.configs import FinetuneConfig, SpaceContext
from search.training.core import NullReporter, TrainSettings
from spaces import get_space


def load(source: ImageSource, image_size: int) -> Dataset:
    data = decode_source(source, image_size=image_size)
    return dataclasses.replace(data, split=stratified_split(data.labels.numpy(), data.split, data.class_names, seed=0))


def study_image_size(source: ImageSource, backbone: Backbone, device: torch.device) -> int:
    """What run_study.py would pick for this data without --image-size."""
    return get_kind("finetune").input_size(
        native=typical_size(source), backbone=backbone, pretrained=True, images=len(source), device=device
    )


def sample_configs(backbone: Backbone, data: Dataset, count: int) -> list[FinetuneConfig]:
    """Configs from the real space, restricted to the cacheable kind (no augmentation, <= 1 unfrozen)."""
    ctx = SpaceContext(
        backbone=backbone.name,
        cut_points=backbone.cut_points,
        max_unfreeze={cut: 1 for cut in backbone.cut_points},
        num_classes=data.num_classes,
        train_size=int((data.split == 0).sum()),
        device="cpu",
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = get_space("finetune")
    configs = []
    for _ in range(count):
        trial = study.ask()
        configs.append(dataclasses.replace(space.suggest(trial, ctx), augment="none"))
        study.tell(trial, 0.0)
    return configs


def run_cached(
    configs: list[FinetuneConfig], source: ImageSource, backbone: Backbone, settings: TrainSettings, image_size: int
) -> float:
    started = time.perf_counter()
    data = load(source, image_size)  # once per process, as the runner does
    cache = FrozenPrefixCache(backbone, data, settings.device)
    for number, config in enumerate(configs):
        train_finetune(config, data, backbone, NullReporter(), dataclasses.replace(settings, seed=number), cache=cache)
    return time.perf_counter() - started


def run_naive(
    configs: list[FinetuneConfig], source: ImageSource, backbone: Backbone, settings: TrainSettings, image_size: int
) -> float:
    started = time.perf_counter()
    for number, config in enumerate(configs):
        data = load(source, image_size)  # inside the objective, every trial
        no_cache = FrozenPrefixCache(backbone, data, settings.device, budget_bytes=0)  # full forward every batch
        train_finetune(
            config, data, backbone, NullReporter(), dataclasses.replace(settings, seed=number), cache=no_cache
        )
    return time.perf_counter() - started


def main() -> None:
    keep_freed_memory()  # as every study process does: both arms run with the same allocator
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="digits", help="digits, or a folder with one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=None)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = create_backbone("efficientnet_lite0")
    backbone.stages.to(device)
    settings = TrainSettings(max_epochs=args.epochs, patience=args.epochs, device=device, seed=0)
    source = open_source(args.data, root=Path("studies/datasets"))
    image_size = args.image_size or study_image_size(source, backbone, device)
    configs = sample_configs(backbone, load(source, image_size), args.trials)
    print(
        f"{args.trials} finetune trials x {args.epochs} epochs on {Path(args.data).name} at {image_size}px, {device}:"
    )
    naive = run_naive(configs, source, backbone, settings, image_size)
    cached = run_cached(configs, source, backbone, settings, image_size)
    print(f"  naive per-trial loop : {naive:7.1f} s")
    print(f"  shared data + cache  : {cached:7.1f} s")
    print(f"  speed-up             : {naive / cached:7.1f}x")


if __name__ == "__main__":
    main()
