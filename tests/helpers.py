"""What many test modules share: where the project is, and the flags that make a CLI study take seconds."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.training.configs import FinetuneConfig, ScratchConfig

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "photos"  # real photos, see photos/README.md
# 32 px images, two epochs, early stop after one stale epoch: a CLI study on the digits in seconds
FAST = ["--image-size", "32", "--max-epochs", "2", "--patience", "1"]
# Four of the ten digits (720 images): a finetune trial in half the time of all ten, and still real data.
FEW_DIGIT_CLASSES = ("0", "1", "2", "3")
FEW_DIGITS = ["--classes", ",".join(FEW_DIGIT_CLASSES)]

CHECKED = ["search", "spaces", "tests", "bench", "run_study.py"]  # what ruff and mypy check
MYPY = pytest.StashKey[subprocess.Popen[str]]()  # the mypy run conftest.py starts at collection


def start_mypy() -> subprocess.Popen[str]:
    """mypy over the tree, at low priority: a minute of one core, which the suite leaves idle in its many waits."""
    return subprocess.Popen(
        [sys.executable, "-m", "mypy", *CHECKED],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.nice(10),
    )


def head_config(**changes: object) -> FinetuneConfig:
    """A plain finetune config, changed where a test needs: a linear head on conv_head, Adam at 1e-3,
    nothing unfrozen, no augmentation, no weight decay."""
    base = FinetuneConfig(
        cut="conv_head",
        head_width=64,
        head_depth=0,
        head_batchnorm=False,
        head_dropout=0.0,
        weight_decay=0.0,
        optimizer="adam",
        lr=1e-3,
        momentum=0.0,
        batch_size=16,
        unfreeze_blocks=0,
        backbone_lr_factor=1.0,
        head_only_epochs=0,
        augment="none",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def scratch_config(**changes: object) -> ScratchConfig:
    """A small scratch CNN (two blocks of 8 and 16 maps, an average-pooled linear head), changed where a test needs."""
    base = ScratchConfig(
        channels=(8, 16),
        convs_per_block=1,
        kernel_size=3,
        batchnorm=True,
        pool="max",
        head_pool="avg",
        fc_layers=0,
        fc_width=16,
        dropout=0.0,
        optimizer="adam",
        lr=1e-3,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=16,
        augment="none",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
