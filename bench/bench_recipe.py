"""Benchmark: the PyTorch transfer-learning tutorial's hand recipe against a study given the same wall time.

The recipe arm is the tutorial's `train_model` on the same backbone, image size and split: the whole
network fine-tuned with a new linear classifier, SGD (lr 1e-3, momentum 0.9), step decay (x0.1
every 7 epochs), batch 4, RandomResizedCrop + horizontal flip, a fixed number of epochs, and the
best validation epoch kept. The study arm runs the default finetune study on the same data for as
long as the recipe took (its preparation, like the recipe's data loading, not counted). Both are
then scored on the test split neither saw. The last line compares them:

    python bench/bench_recipe.py --data ../shared/data/flowers-mini [--epochs 10]
    ...
    study - recipe: +X.X points val, +Y.Y points test

The tutorial trains 25 epochs; on 2 CPU cores at 224 px that is about an hour on a few hundred
photos, so the default here is 10 (its step decay still applies once, after epoch 7).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn
from torchvision.transforms import v2

from search.allocator import keep_freed_memory
from search.data.dataset import Dataset
from search.data.sources import TEST, TRAIN, VAL
from search.models.backbones import Backbone
from search.models.prefix_cache import normalize
from search.study.runner import prepare, run
from search.study.spec import StudySpec

TUTORIAL_BATCH = 4
TUTORIAL_LR, TUTORIAL_MOMENTUM = 1e-3, 0.9
TUTORIAL_STEP, TUTORIAL_GAMMA = 7, 0.1


def tutorial_network(backbone: Backbone, num_classes: int) -> nn.Sequential:
    """The whole pretrained trunk, trainable, then global pooling and a new linear classifier (model_ft.fc)."""
    trunk = copy.deepcopy(backbone.stage_range(0, len(backbone.stages)))
    for parameter in trunk.parameters():
        parameter.requires_grad_(True)
    channels = backbone.channels_at(backbone.stage_names[-1])
    return nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


@torch.no_grad()
def accuracy(network: nn.Module, backbone: Backbone, data: Dataset, part: int) -> float:
    images, labels = data.part(part)
    if not len(labels):
        return float("nan")
    network.eval()
    predicted = torch.cat([network(normalize(batch, backbone)).argmax(1) for batch in images.split(64)])
    return float((predicted == labels).float().mean())


def run_recipe(backbone: Backbone, data: Dataset, epochs: int, seed: int) -> tuple[float, float, float]:
    """(best val accuracy, test accuracy of that epoch's weights, seconds): the tutorial's train_model."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    network = tutorial_network(backbone, data.num_classes)
    optimizer = torch.optim.SGD(network.parameters(), lr=TUTORIAL_LR, momentum=TUTORIAL_MOMENTUM)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=TUTORIAL_STEP, gamma=TUTORIAL_GAMMA)
    size = data.image_size
    augment = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    images, labels = data.part(TRAIN)
    best_val, best_state = -1.0, copy.deepcopy(network.state_dict())
    for epoch in range(1, epochs + 1):
        network.train()
        for batch in torch.randperm(len(labels)).split(TUTORIAL_BATCH):
            if len(batch) < 2:
                continue  # batch norm cannot train on one image
            x = torch.stack([augment(image) for image in images[batch]])  # one draw per image, as a DataLoader does
            loss = nn.functional.cross_entropy(network(normalize(x, backbone)), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        val = accuracy(network, backbone, data, VAL)
        logging.info("recipe epoch %d: val %.2f%%", epoch, 100 * val)
        if val > best_val:
            best_val, best_state = val, copy.deepcopy(network.state_dict())
    seconds = time.perf_counter() - started
    network.load_state_dict(best_state)
    return best_val, accuracy(network, backbone, data, TEST), seconds


def main() -> None:
    keep_freed_memory()  # as every study process does: both arms run with the same allocator
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="an image folder (class sub-folders, or train/ val/ [test/])")
    parser.add_argument("--epochs", type=int, default=10, help="the recipe's fixed number of epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = StudySpec(
            data=args.data,
            trials=10_000,  # the time budget ends it
            storage=f"sqlite:///{root / 'bench.db'}",
            artifact_dir=root / "artifacts",
            cache_dir=root / "cache",
            seed=args.seed,
        )
        prepared = prepare(spec)  # decodes and splits once: the recipe trains on exactly the study's split
        data, backbone = prepared.data, prepared.resources.backbone
        counts = data.split_counts()
        print(f"{args.data}: train/val/test {counts['train']}/{counts['val']}/{counts['test']} at {data.image_size}px")
        recipe_val, recipe_test, recipe_seconds = run_recipe(backbone, data, args.epochs, args.seed)
        print(
            f"recipe ({args.epochs} epochs): val {100 * recipe_val:.1f}%, test {100 * recipe_test:.1f}%, {recipe_seconds:.0f} s"
        )
        started = time.perf_counter()
        run(dataclasses.replace(prepared, spec=dataclasses.replace(prepared.spec, timeout=recipe_seconds)))
        study_seconds = time.perf_counter() - started
        study = prepared.study
        best = study.best_trial
        study_val = float(best.user_attrs["val_accuracy"])
        study_test = float(study.user_attrs.get("test_evaluation", {}).get("accuracy", np.nan))
        finished = sum(t.state.is_finished() for t in study.trials)
        print(
            f"study ({finished} trials, best #{best.number}): val {100 * study_val:.1f}%, test {100 * study_test:.1f}%, "
            f"{study_seconds:.0f} s"
        )
        print(
            f"study - recipe: {100 * (study_val - recipe_val):+.1f} points val, "
            f"{100 * (study_test - recipe_test):+.1f} points test"
        )


if __name__ == "__main__":
    main()
