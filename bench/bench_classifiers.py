"""Benchmark: one features trial's fit time against the number of training items, per classifier.

Each cell times the real trainer (`train_features`: the child process, scaling, the fit, scoring
the validation items) on synthetic pooled features shaped like EfficientNet-Lite0's `conv_head`
(1,280 channels, average and max pool) for 10 classes, with the space's own size rules: a kernel
SVM only up to `KERNEL_SVM_MAX_ITEMS` items, SGD above it, forests drawing at most
`RF_TREE_MAX_ITEMS` items per tree. A cell the space would not offer is measured anyway up to
`--max-offered-seconds` and marked `(not offered)`, so the table shows why the limits sit where
they do. Prints a Markdown table for bench/RESULTS.md.

    python bench/bench_classifiers.py [--items 1000,5000,20000,42500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from search.data.dataset import Dataset
from search.data.sources import TRAIN, VAL
from search.kinds.features.trainer import train_features
from search.training.configs import FeaturesConfig
from search.training.core import NullReporter, TrainSettings
from spaces.features import RF_TREE_MAX_ITEMS, classifiers_for

CLASSES = 10
CHANNELS = 1280
VAL_FRACTION = 0.15
CLASSIFIER_PARAMS: dict[str, dict[str, object]] = {  # mid-range values of the space's own ranges
    "rf": {"rf_n_estimators": 100, "rf_min_samples_leaf": 2},
    "svm": {"svm_kernel": "rbf", "svm_c": 10.0},
    "logreg": {"logreg_c": 1.0},
    "sgd": {"sgd_alpha": 1e-4},
}


def synthetic(train_items: int, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Labels with a train/val split and class-clustered pooled features [items, 2, CHANNELS]."""
    rng = np.random.default_rng(seed)
    items = int(train_items / (1 - VAL_FRACTION))
    labels = rng.integers(0, CLASSES, items)
    centres = np.asarray(rng.normal(size=(CLASSES, CHANNELS)), dtype=np.float32)
    pooled = centres[labels] + 3.0 * np.asarray(rng.normal(size=(items, CHANNELS)), dtype=np.float32)
    features = np.stack([pooled, pooled + np.asarray(rng.normal(size=pooled.shape), dtype=np.float32)], axis=1)
    split = np.full(items, TRAIN, dtype=np.int8)
    split[train_items:] = VAL
    data = Dataset(
        name="synthetic",
        class_names=tuple(str(c) for c in range(CLASSES)),
        images=torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
        labels=torch.from_numpy(labels),
        split=split,
        fingerprint="synthetic",
    )
    return data, features


def fit_seconds(classifier: str, data: Dataset, features: np.ndarray, train_items: int) -> tuple[float, float]:
    """(wall seconds, val accuracy) of one trial of `classifier` under the space's size rules."""
    extra = {"rf_max_samples": min(1.0, RF_TREE_MAX_ITEMS / train_items)} if classifier == "rf" else {}
    config = FeaturesConfig(
        layers=("conv_head",),
        pooling=("avg",),
        l2_normalize=(True,),
        pca_dims=0,
        classifier=classifier,
        **CLASSIFIER_PARAMS[classifier],  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
    settings = TrainSettings(max_epochs=1, patience=1, device=torch.device("cpu"), seed=0, metric="val_loss")
    started = time.perf_counter()
    result = train_features(config, data, lambda _: features, NullReporter(), settings)
    assert result.best is not None
    return time.perf_counter() - started, result.best.val_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1000,5000,20000,42500", help="training items per row, comma-separated")
    parser.add_argument("--max-offered-seconds", type=float, default=60.0, help="skip a not-offered cell past this")
    args = parser.parse_args()
    classifiers = list(CLASSIFIER_PARAMS)
    print(
        f"features: {CHANNELS} channels (conv_head average pool), {CLASSES} classes, {torch.get_num_threads()} threads"
    )
    print(f"| training items | {' | '.join(classifiers)} |")
    print(f"| ---: | {' | '.join('---:' for _ in classifiers)} |")
    last: dict[str, tuple[int, float]] = {}  # per classifier: (items, seconds) of its last measured cell
    for train_items in (int(n) for n in args.items.split(",")):
        data, features = synthetic(train_items)
        offered = classifiers_for(train_items)
        cells = []
        for classifier in classifiers:
            items, seconds = last.get(classifier, (train_items, 0.0))
            if classifier not in offered and seconds * train_items / items > args.max_offered_seconds:
                cells.append("(not offered; over the cap)")  # the cost grows at least linearly with the items
                continue
            seconds, _ = fit_seconds(classifier, data, features, train_items)
            last[classifier] = (train_items, seconds)
            cells.append(f"{seconds:.1f} s{'' if classifier in offered else ' (not offered)'}")
        print(f"| {train_items:,} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
