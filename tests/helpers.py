"""What many test modules share: where the project is, and the flags that make a CLI study take seconds."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# 32 px images, two epochs, early stop after one stale epoch: a CLI study on the digits in seconds
FAST = ["--image-size", "32", "--max-epochs", "2", "--patience", "1"]
