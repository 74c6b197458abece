"""A study's first step: check what the spec names (cheapest first), open the storage, resolve what it leaves open."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from search.data.sizing import typical_size
from search.data.sources import ImageSource, open_source
from search.errors import UserError
from search.kinds import SourceTrial, StudyKind, get_kind, stands_on_backbone, taking_source
from search.models.backbones import Backbone
from search.models.zoo import ZOO, available, zoo_names
from search.study.artifacts import open_artifact_store
from search.study.record import Resolved, StudyRecord, read_record, read_source_trial
from search.study.spec import IDENTITY_FIELDS, StudySpec
from search.study.storage import open_storage
from search.training.core import resolve_device
from spaces import Space, get_space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    """The first step's findings: what the spec names exists, and what the storage already holds."""

    space: Space
    kind: StudyKind
    device: torch.device
    source: ImageSource
    backbones: tuple[Backbone, ...]  # the study's backbone, or each one it searches among
    storage: optuna.storages.RDBStorage
    store: FileSystemArtifactStore
    stored: StudyRecord | None  # the study of this name, when it exists
    tapped: SourceTrial | None  # the trial named by --from-trial

    @property
    def backbone(self) -> Backbone:
        return self.backbones[0]


def open_spec(spec: StudySpec) -> Opened:
    """Check what the spec names, cheapest first (a typo must not create a database), and open the storage."""
    space = get_space(spec.space)
    kind = get_kind(space.kind)
    device = resolve_device(spec.device)
    source = open_source(spec.data, root=spec.data_root, classes=spec.classes)
    named = spec.backbones != (ZOO,)
    if (len(spec.backbones) > 1 or not named) and not stands_on_backbone(kind):
        raise UserError(f"{kind.name} studies stand on no backbone; give --backbone one name or leave it out")
    backbones = tuple(_study_backbone(spec, kind, name) for name in spec.backbones) if named else ()
    storage = open_storage(spec.storage)
    store = open_artifact_store(spec.artifact_dir)
    stored = read_record(storage, spec.name)
    if not named:
        backbones = _zoo(spec, kind, device, stored)
    tapped = _source_trial(spec, kind, backbones[0], storage, store)
    if tapped is not None:
        backbones = (taking_source(kind).source_backbone(tapped, backbones[0]),)
    return Opened(space, kind, device, source, backbones, storage, store, stored, tapped)


def _study_backbone(spec: StudySpec, kind: StudyKind, name: str) -> Backbone:
    return kind.study_backbone(name, pretrained=spec.pretrained, weights_file=spec.weights)


def _zoo(spec: StudySpec, kind: StudyKind, device: torch.device, stored: StudyRecord | None) -> tuple[Backbone, ...]:
    """The zoo's entries whose weights are here (search.models.zoo); a resume searches the same ones as its study."""
    searched = stored.resolved.searched if stored is not None and stored.resolved is not None else ()
    if searched:  # the sampler's choices of backbone must not change within a study
        return tuple(_study_backbone(spec, kind, name) for name in searched)
    built, skipped = available(zoo_names(device.type), lambda name: _study_backbone(spec, kind, name))
    if skipped:
        log.warning(
            "--backbone zoo: skipping %s (weights not here: see docs/backbones.md); searching %s",
            ", ".join(skipped),
            ", ".join(b.name for b in built),
        )
    return tuple(built)


def _source_trial(
    spec: StudySpec, kind: StudyKind, backbone: Backbone, storage: optuna.storages.BaseStorage, store: Any
) -> SourceTrial | None:
    """The trial named by --from-trial; a fine-tuned one must have stood on this study's backbone flags."""
    if spec.from_trial is None:
        return None
    taking_source(kind)  # a one-line error before the source is read
    source = read_source_trial(spec.from_trial, storage, store)
    if not stands_on_backbone(get_kind(source.kind)):
        return source  # a scratch network is its own backbone
    theirs = {"backbone": source.backbone, "pretrained": source.pretrained, "weights": source.weights}
    ours = {
        "backbone": backbone.name,
        "pretrained": spec.pretrained,
        "weights": str(spec.weights) if spec.weights else None,
    }
    for flag, value in theirs.items():  # the study records the backbone its network stands on
        if value != ours[flag]:
            raise UserError(f"trial {spec.from_trial} was trained with {flag}={value!r}; pass the same --{flag}")
    return source


def resolve(spec: StudySpec, opened: Opened) -> Resolved:
    """What the spec leaves open: the image size (asked, stored, the tapped network's, or the kind's default) and weights."""
    stored_size = opened.stored.image_size if opened.stored else None
    tapped_size = opened.tapped.image_size if opened.tapped else None  # the size the tapped network was trained at
    image_size = (
        spec.image_size
        or stored_size
        or tapped_size
        or max(  # one decoding for every backbone searched: the largest native size serves them all
            opened.kind.input_size(
                native=typical_size(opened.source),
                backbone=backbone,
                pretrained=spec.pretrained != "none" or spec.weights is not None,
                images=len(opened.source),
                device=opened.device,
            )
            for backbone in opened.backbones
        )
    )
    backbone = opened.backbone
    searched = {b.name: {"weights": b.weights, "mean": list(b.mean), "std": list(b.std)} for b in opened.backbones}
    return Resolved(
        kind=opened.kind.name,
        device=str(opened.device),
        image_size=image_size,
        backbone_weights=opened.tapped.weights_id if opened.tapped else backbone.weights,
        mean=opened.tapped.mean if opened.tapped else backbone.mean,  # a transferred network keeps its preprocessing
        std=opened.tapped.std if opened.tapped else backbone.std,
        source=_source_summary(opened),
        backbone=",".join(searched),
        backbones=searched if len(searched) > 1 else None,
    )


def _source_summary(opened: Opened) -> dict[str, Any] | None:
    """What the record says of a transferred trial: which, of what kind, trained on which data."""
    tapped = opened.tapped
    if tapped is None:
        return None
    return {
        "trial": f"{tapped.study_name}:{tapped.number}",
        "kind": tapped.kind,
        "classes": list(tapped.classes),
        "fingerprint": tapped.fingerprint,
        "same_data": tapped.fingerprint == opened.source.fingerprint(),
    }


def check_same_setup(spec: StudySpec, resolved: Resolved, stored: StudyRecord) -> None:
    """Refuse to mix trials of another space, backbone, image size, metric or normalisation under one name."""
    old, current = stored.spec.to_record() if stored.spec else {}, spec.to_record()
    was = stored.resolved
    if was is not None:  # the size is compared as resolved: a resume need not repeat --image-size
        old["image_size"], current["image_size"] = was.image_size, resolved.image_size
    for key in IDENTITY_FIELDS:
        if key in old and old[key] != current[key]:
            raise UserError(
                f"study '{spec.name}' was run with {key}={old[key]!r}, not {current[key]!r}; use another --study-name or the same {key}"
            )
    if was is None:
        return
    if (was.mean, was.std) != (resolved.mean, resolved.std):
        raise UserError(
            f"study '{spec.name}' was run with another pixel normalisation (mean {list(was.mean)}, std {list(was.std)}) "
            f"than {spec.backbone}'s weights need (mean {list(resolved.mean)}, std {list(resolved.std)}); use another --study-name"
        )
