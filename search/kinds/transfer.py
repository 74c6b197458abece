"""A trained trial's network as the backbone of another study, on the same data or on other data.

The source's stages, up to where its trial cut them, become the stages of a new Backbone fed with the
source's preprocessing; another study then puts a new head for its own classes on any of its cut points.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from torch import nn

from search.kinds.base import SourceTrial, giving_network, stands_on_backbone
from search.kinds.registry import get_kind
from search.models.backbones import Backbone, create_backbone, freeze


def source_base(source: SourceTrial) -> Backbone | None:
    """The backbone the source trial stood on, as its study recorded it; None when its kind stands on none."""
    if not stands_on_backbone(get_kind(source.kind)):
        return None
    weights = Path(source.weights) if source.weights else None
    backbone = create_backbone(source.backbone, pretrained=source.pretrained, weights_file=weights)
    return backbone.with_normalization(source.mean, source.std)


def transferred_backbone(source: SourceTrial, base: Backbone | None = None) -> Backbone:
    """The source trial's trained stages (its model None: their shape only) as a frozen Backbone.

    `base`: the backbone the source stood on when the caller holds it already (the runner checked its
    flags against the source's); otherwise it is built from the source's record.
    """
    kind = get_kind(source.kind)
    if stands_on_backbone(kind) and base is None:
        base = source_base(source)
    stages, cut_points = giving_network(kind).trained_stages(
        source.config, source.model, base if stands_on_backbone(kind) else None, len(source.classes)
    )
    backbone = Backbone(
        name=f"trial {source.study_name}:{source.number}",
        stages=nn.ModuleDict(stages),
        cut_points=cut_points,
        weights=source.weights_id,
        mean=source.mean,
        std=source.std,
        native_image_size=source.image_size,
    )
    freeze(backbone.stages)
    return backbone


def source_record(source: SourceTrial) -> dict[str, Any]:
    """What a bundle keeps of its source trial to rebuild the network's shape (its weights are the bundle's)."""
    record = asdict(replace(source, model=None))
    del record["model"]
    return {**record, "mean": list(source.mean), "std": list(source.std), "classes": list(source.classes)}


def source_from_record(record: dict[str, Any]) -> SourceTrial:
    """The shape of a bundle's source trial, from `source_record`: untrained, no weights read (the bundle's replace them)."""
    values = {**record, "mean": tuple(record["mean"]), "std": tuple(record["std"]), "classes": tuple(record["classes"])}
    return SourceTrial(**{**values, "model": None, "pretrained": "none", "weights": None})
