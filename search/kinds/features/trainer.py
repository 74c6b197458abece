"""Feature-extraction trainer: pooled backbone features into a scikit-learn classifier.

A plain function of (config, data, features, reporter, settings), like the finetune trainer. A random
forest grows in stages (`warm_start`) and reports after each one, so a poor forest is pruned early;
an SVM or a logistic regression reports once. The fitted pipeline takes the concatenated pooled
features of the chosen layers, so a saved model needs only the backbone's taps in front of it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import TypeVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_class_weight

from search.data.dataset import Dataset
from search.data.sources import TRAIN, VAL
from search.kinds.features.child_fit import in_child
from search.training.configs import FeaturesConfig
from search.training.core import EpochMetrics, Reporter, Status, TrainSettings, TrialResult

RF_STAGES = 4  # a forest is grown in this many steps, reporting after each
SGD_EPOCHS = 30  # passes over the training items at most (it stops earlier once the loss settles)
TRAIN_SCORE_ITEMS = (
    256  # training loss/accuracy (curves only) on a fixed sample: predicting every item costs more than the fit
)
PooledT = TypeVar("PooledT", np.ndarray, torch.Tensor)
LayerFeatures = Callable[[str], np.ndarray]  # layer -> float32 [items, 2, C] (average, max pool)


def select_features(config: FeaturesConfig, features: LayerFeatures) -> np.ndarray:
    """The chosen layers' pooled vectors side by side: what the fitted pipeline takes as input."""
    blocks = [
        pooled_columns(features(layer), pooling) for layer, pooling in zip(config.layers, config.pooling, strict=True)
    ]
    return np.concatenate(blocks, axis=1)


def pooled_columns(pooled: PooledT, pooling: str) -> PooledT:
    """One layer's columns of the pipeline's input from its [N, 2, C] pools (numpy, or torch in an exported graph)."""
    return pooled.reshape(pooled.shape[0], -1) if pooling == "both" else pooled[:, 0 if pooling == "avg" else 1]


def layer_widths(config: FeaturesConfig, features: LayerFeatures) -> list[int]:
    return [
        features(layer).shape[2] * (2 if pooling == "both" else 1)
        for layer, pooling in zip(config.layers, config.pooling, strict=True)
    ]


def build_pipeline(
    config: FeaturesConfig, widths: list[int], labels: np.ndarray, *, seed: int, threads: int
) -> Pipeline:
    """Per-layer L2 normalisation, scaling where the classifier needs it, optional PCA, the classifier."""
    columns, start = [], 0
    for layer, width, l2 in zip(config.layers, widths, config.l2_normalize, strict=True):
        columns.append((layer, Normalizer() if l2 else "passthrough", slice(start, start + width)))
        start += width
    steps: list[tuple[str, object]] = [("layers", ColumnTransformer(columns))]
    if config.classifier != "rf":  # margins and penalties assume comparable feature scales; trees do not
        steps.append(("scale", StandardScaler()))
    if config.pca_dims:
        steps.append(("pca", PCA(n_components=min(config.pca_dims, start, len(labels) - 1), random_state=seed)))
    steps.append(("classifier", _classifier(config, labels, seed=seed, threads=threads)))
    return Pipeline(steps)


def _classifier(config: FeaturesConfig, labels: np.ndarray, *, seed: int, threads: int) -> ClassifierMixin:
    if config.classifier == "rf":
        # "balanced" weights fixed up front: a forest grown in stages (warm_start) must keep one weighting
        classes = np.unique(labels)
        weights = compute_class_weight("balanced", classes=classes, y=labels)
        class_weight = dict(zip(classes.tolist(), weights.tolist(), strict=True)) if config.rf_balanced else None
        max_features: str | float = (
            float(config.rf_max_features) if config.rf_max_features[0].isdigit() else config.rf_max_features
        )
        return RandomForestClassifier(
            n_estimators=config.rf_n_estimators,
            max_samples=config.rf_max_samples if config.rf_max_samples < 1.0 else None,
            min_samples_leaf=config.rf_min_samples_leaf,
            max_features=max_features,
            class_weight=class_weight,
            warm_start=True,
            n_jobs=threads,
            random_state=seed,
        )
    if config.classifier == "svm":
        gamma: str | float = config.svm_gamma or "scale"
        svm = SVC(C=config.svm_c, kernel=config.svm_kernel, gamma=gamma, random_state=seed)
        return CalibratedClassifierCV(svm, ensemble=False, cv=2)  # Platt-scaled probabilities for the log loss
    if config.classifier == "sgd":  # linear in the items: one pass costs what one lbfgs step costs, ~20 passes
        return SGDClassifier(
            loss="log_loss", alpha=config.sgd_alpha, max_iter=SGD_EPOCHS, tol=1e-3, n_jobs=threads, random_state=seed
        )
    return LogisticRegression(C=config.logreg_c, max_iter=300)  # standardised inputs converge well within it


def _scores(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float]:
    clipped = np.clip(probabilities, 1e-7, 1.0)
    loss = log_loss(labels, clipped / clipped.sum(1, keepdims=True), labels=list(range(num_classes)))
    return float(loss), float((probabilities.argmax(1) == labels).mean())


def rf_stages(total: int) -> list[int]:
    """Forest sizes after each growth step, ending at `total`."""
    return sorted({max(1, math.ceil(total * (step + 1) / RF_STAGES)) for step in range(RF_STAGES)})


def train_features(
    config: FeaturesConfig,
    data: Dataset,
    features: LayerFeatures,
    reporter: Reporter,
    settings: TrainSettings,
) -> TrialResult:
    """Fit the pipeline on the training items; report the study's metric per forest stage, or once.

    The fits run in a child process (`in_child`): a prune, Ctrl-C or SIGTERM ends a native fit at once.
    """
    started = time.perf_counter()
    history: list[EpochMetrics] = []
    best = settings.best_epoch()
    inputs, widths = (
        select_features(config, features),
        layer_widths(config, features),
    )  # read here: kept for the next trial
    with closing(in_child(lambda: _fitted_stages(config, inputs, widths, data, settings))) as stages:
        for metrics, val_probabilities, pipeline in stages:
            history.append(metrics)
            best.offer(metrics, val_probabilities, lambda kept=pipeline: kept, replace=True)  # the latest stage
            if reporter.report(metrics.epoch, metrics):
                return TrialResult.ended(Status.PRUNED, started, best, history, reason="pruned by the study's pruner")
    return TrialResult.ended(Status.COMPLETE, started, best, history)


def _fitted_stages(
    config: FeaturesConfig, inputs: np.ndarray, widths: list[int], data: Dataset, settings: TrainSettings
) -> Iterator[tuple[EpochMetrics, np.ndarray, Pipeline | None]]:
    """Per forest stage (or once): its metrics, validation probabilities, and the pipeline after the last stage.

    Only the last stage sends its pipeline back: only a complete trial keeps its model, and a big
    forest costs more to send than to score.
    """
    labels = data.labels.numpy()
    train, val = data.split == TRAIN, data.split == VAL
    threads = max(1, torch.get_num_threads())
    pipeline = build_pipeline(config, widths, labels[train], seed=settings.seed, threads=threads)
    prepare, classifier = pipeline[:-1], pipeline[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # an under-converged fit is judged by its val loss
        train_x = prepare.fit_transform(inputs[train], labels[train])
        val_x = prepare.transform(inputs[val])
        scored = np.random.default_rng(settings.seed).permutation(len(train_x))[:TRAIN_SCORE_ITEMS]
        sizes = rf_stages(config.rf_n_estimators) if config.classifier == "rf" else [0]
        for stage, size in enumerate(sizes, start=1):
            stage_start = time.perf_counter()
            if size:
                classifier.set_params(n_estimators=size)
            classifier.fit(train_x, labels[train])
            train_loss, train_acc = _scores(
                classifier.predict_proba(train_x[scored]), labels[train][scored], data.num_classes
            )
            val_probabilities = classifier.predict_proba(val_x)
            val_loss, val_acc = _scores(val_probabilities, labels[val], data.num_classes)
            metrics = EpochMetrics(stage, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - stage_start)
            yield metrics, val_probabilities, pipeline if stage == len(sizes) else None
