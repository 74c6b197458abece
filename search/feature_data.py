"""Data of a features study: the on-disk feature cache filled by streaming, and a fine-tuned network to tap."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
import torch

from search.backbones import Backbone, recorded_normalization
from search.dataset import Dataset, check_readable, dataset_of, decoded_batches, warn_ignored
from search.errors import UserError
from search.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
from search.sources import ImageSource
from search.spec import StudySpec
from search.trained_model import FineTunedSource, fine_tuned_source

log = logging.getLogger(__name__)

EXTRACT_BATCH = 64  # images decoded and run through the backbone at once while filling the feature cache


def fine_tuned_for(
    spec: StudySpec, kind: str, storage: optuna.storages.BaseStorage, store: Any, backbone: Backbone
) -> FineTunedSource | None:
    """The finetune trial named by --from-trial, checked against this study's backbone and space."""
    if spec.from_trial is None:
        return None
    if kind != "features":
        raise UserError("--from-trial taps a fine-tuned network for --space features; drop it for other spaces")
    tuned = fine_tuned_source(spec.from_trial, storage, store, backbone=backbone)
    for flag in ("backbone", "pretrained", "weights"):  # its frozen stages are the backbone's own weights
        ours = backbone.name if flag == "backbone" else spec.to_record()[flag]
        if tuned.spec.get(flag) != ours:
            raise UserError(
                f"trial {spec.from_trial} was fine-tuned with {flag}={tuned.spec.get(flag)!r}; pass the same --{flag}"
            )
    if recorded_normalization(tuned.spec) != backbone.normalization:
        raise UserError(
            f"trial {spec.from_trial} was fine-tuned on pixels normalised with {recorded_normalization(tuned.spec)}, "
            f"not {backbone.name}'s {backbone.normalization}; fine-tune it again with this version"
        )
    return tuned


def stream_features(
    spec: StudySpec, source: ImageSource, extractor: FeatureExtractor, weights: str
) -> tuple[Dataset, FeatureCache]:
    """Fill (or reuse) the on-disk feature cache by streaming the images; the dataset keeps labels only."""
    assert spec.image_size is not None
    key = FeatureKey(
        spec.backbone, weights, spec.image_size, source.fingerprint(), len(source), extractor.mean, extractor.std
    )
    cache = FeatureCache(spec.cache_dir, key, extractor)
    warn_ignored(source)
    bad: list[str] = []

    def batches() -> Iterator[tuple[np.ndarray, torch.Tensor, list[str]]]:
        for indices, images, reasons in decoded_batches(source, image_size=key.image_size, batch_size=EXTRACT_BATCH):
            bad.extend(reasons)
            yield indices, images, reasons

    good = cache.ensure(batches)
    if cache.extractions:
        check_readable(source, int(good.sum()), bad)
    elif not good.all():
        log.warning("skipping %d images that could not be read when their features were cached", int((~good).sum()))
    return dataset_of(source, good, None, image_size=key.image_size), cache
