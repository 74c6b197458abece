"""The study runner: storage, sampler, pruner, data bound to the study, and the optimisation loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from search.artifacts import open_artifact_store
from search.backbones import create_backbone, recorded_normalization
from search.configs import SpaceContext
from search.dataset import SPLIT_ATTR, Dataset, decode_source, stratified_split, typical_size
from search.errors import StudyAborted, UserError
from search.evaluation import finish_study
from search.feature_cache import FeatureCache, FeatureExtractor
from search.feature_data import fine_tuned_for, stream_features
from search.objective import Resources, TrialFailed, make_objective
from search.prefix_cache import FrozenPrefixCache
from search.sources import class_counts, open_source
from search.spec import IDENTITY_FIELDS, StudySpec, default_image_size
from search.storage import open_storage
from search.training import TrainSettings
from search.workers import FINISHED, StopWhenCovered, rounds, tagged, worker_seed
from spaces import Space, get_space

MAX_FAILURES_IN_A_ROW = 5  # a study whose trials all fail is misconfigured; stop instead of looping
Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass
class PreparedStudy:
    """Everything a worker process builds once before its first trial."""

    spec: StudySpec
    study: optuna.Study
    space: Space
    context: SpaceContext
    resources: Resources

    @property
    def data(self) -> Dataset:
        return self.resources.data


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {requested}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0..)")
    return device


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """TPE by default: multivariate with groups, because the spaces are conditional."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """Median by default: it needs no budget arithmetic and waits for a few finished trials."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass(frozen=True)
class _StoredStudy:
    """What an existing study already holds: its attributes, its data split, its trial count."""

    attrs: dict[str, Any]
    split: str | None
    trials: int


def _stored_study(storage: optuna.storages.BaseStorage, name: str) -> _StoredStudy | None:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return _StoredStudy(
        attrs=dict(storage.get_study_user_attrs(study_id)),
        split=storage.get_study_system_attrs(study_id).get(SPLIT_ATTR),
        trials=len(storage.get_all_trials(study_id, deepcopy=False)),
    )


def _check_same_setup(spec: StudySpec, stored: dict[str, Any]) -> None:
    """Refuse to mix trials of another space, backbone, image size or metric under one study name."""
    old = stored.get("spec", {})
    current = spec.to_record()
    for key in IDENTITY_FIELDS:
        if key in old and old[key] != current[key]:
            raise UserError(
                f"study '{spec.name}' was run with {key}={old[key]!r}, not {current[key]!r}; use another --study-name or the same {key}"
            )
    was, now = recorded_normalization(old), recorded_normalization(current)
    if old and was != now:
        raise UserError(
            f"study '{spec.name}' was run with another pixel normalisation ({was}) than "
            f"{spec.backbone}'s weights need ({now}); use another --study-name"
        )


def _check_same_data(spec: StudySpec, stored: dict[str, Any], data: Dataset) -> None:
    """Refuse to mix trials of another dataset under one study name, saying what changed."""
    old_data = stored.get("data", {})
    if old_data and old_data.get("fingerprint") != data.fingerprint:
        change = f"{old_data.get('images')} images in {len(old_data.get('classes', []))} classes -> {len(data.labels)} images in {data.num_classes} classes"
        if old_data.get("name") != data.name:
            change = f"'{old_data.get('name')}' -> '{data.name}'"
        elif old_data.get("classes") != list(data.class_names):
            change = f"classes {old_data.get('classes')} -> {list(data.class_names)}"
        raise UserError(
            f"study '{spec.name}' was created with other data ({change}); use another --study-name for this data"
        )


def _data_record(data: Dataset) -> dict[str, Any]:
    return {
        "name": data.name,
        "fingerprint": data.fingerprint,
        "classes": list(data.class_names),
        "images": len(data.labels),
        "class_counts": class_counts(data.labels.numpy(), data.num_classes),
        "split_counts": data.split_counts(),
        "image_size": data.image_size,
    }


def prepare(spec: StudySpec) -> PreparedStudy:
    """Open the study and build data, backbone and caches once for this process."""
    space = get_space(spec.space)  # cheap checks first: a typo must not create a database
    device = resolve_device(spec.device)
    source = open_source(spec.data, root=spec.data_root)
    backbone = create_backbone(spec.backbone, pretrained=spec.pretrained, weights_file=spec.weights)
    storage = open_storage(spec.storage)
    artifact_store = open_artifact_store(spec.artifact_dir)
    stored = _stored_study(storage, spec.name)
    tuned = fine_tuned_for(spec, space.kind, storage, artifact_store, backbone)
    stored_size = stored.attrs.get("spec", {}).get("image_size") if stored else None
    image_size = (
        spec.image_size
        or stored_size
        or (tuned.spec["image_size"] if tuned else None)  # the size the tapped network was trained at
        or default_image_size(
            native=typical_size(source),
            backbone_native=backbone.native_image_size,
            pretrained=spec.pretrained != "none" or spec.weights is not None,
            images=len(source),
            cpu_budget=device.type == "cpu" and space.kind == "finetune",  # features: one extraction, always native
        )
    )
    weights = tuned.weights_id if tuned else backbone.weights
    extra = {"device": str(device), "backbone_weights": weights, "normalization": backbone.normalization}
    spec = replace(spec, image_size=image_size, extra=extra)
    if stored is not None:
        _check_same_setup(spec, stored.attrs)  # before decoding: a mismatch should not cost minutes
    features: FeatureCache | None = None
    if space.kind == "features":
        tap_model, taps = tuned.tap_model() if tuned else (backbone.tap_model(), backbone.taps)
        extractor = FeatureExtractor(tap_model, taps, mean=backbone.mean, std=backbone.std, device=device)
        data, features = stream_features(spec, source, extractor, weights)
    else:
        data = decode_source(source, image_size=image_size)
    if stored is not None:
        _check_same_data(spec, stored.attrs, data)
    if tuned is not None:
        _check_same_data(spec, {"data": tuned.data}, data)  # the tapped network must not have seen our val/test
    if stored is not None and stored.split is not None:
        data = data.with_split(stored.split)
    elif tuned is not None:
        data = data.with_split(tuned.split)
    else:
        data = replace(data, split=stratified_split(data.labels.numpy(), data.split, data.class_names, seed=spec.seed))
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction=spec.direction,
        # offset by the trials so far and the worker's index, so no resume or worker replays another's draws
        sampler=make_sampler(spec.sampler, worker_seed(spec.seed, stored.trials if stored else 0)),
        pruner=make_pruner(spec.pruner, spec.max_epochs),
        load_if_exists=True,
    )
    if stored is None or stored.split is None:  # this process made the split: record it, unless beaten
        study_id = storage.get_study_id_from_name(spec.name)
        written = storage.get_study_system_attrs(study_id).get(SPLIT_ATTR)
        if written is not None:  # another worker created the study a moment ago: use its split
            data = data.with_split(written)
        else:
            storage.set_study_system_attr(study_id, SPLIT_ATTR, data.encoded_split())
            study.set_user_attr("data", _data_record(data))
    backbone.stages.to(device)
    context = SpaceContext(
        backbone=backbone.name,
        cut_points=backbone.cut_points,
        max_unfreeze={cut: backbone.max_unfreeze(cut) for cut in backbone.cut_points},
        coarse_stages={cut: backbone.coarse_stages(cut) for cut in backbone.cut_points},
        num_classes=data.num_classes,
        train_size=data.split_counts()["train"],
        device=device.type,
        feature_layers=features.extractor.layers if features else (),
    )
    study.set_user_attr("spec", spec.to_record())
    if stored is None and space.first_trial is not None:  # a new study starts from the known-good recipe
        study.enqueue_trial(space.first_trial(context), skip_if_exists=True)
    settings = TrainSettings(
        max_epochs=spec.max_epochs, patience=spec.patience, device=device, seed=spec.seed, metric=spec.metric
    )
    resources = Resources(
        data=data,
        backbone=backbone,
        settings=settings,
        cache=FrozenPrefixCache(backbone, data, device) if features is None else None,
        features=features.layer if features is not None else None,
        artifact_store=artifact_store,
    )
    return PreparedStudy(spec=spec, study=study, space=space, context=context, resources=resources)


class _StopAfterFailures:
    """Stops the study when trials keep failing, instead of looping on a broken setup."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.reason: str | None = None  # set when it stopped the study

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            last = trial.user_attrs.get("fail_reason", "run with -v for details")
            self.reason = f"{self.in_a_row} trials failed in a row (last: {last})"
            study.stop()


def run(prepared: PreparedStudy, *, callbacks: Sequence[Callback] = ()) -> None:
    """Top the study up to `spec.trials` finished trials, shared with any other workers on it.

    StudyAborted when trials keep failing.
    """
    spec, study = prepared.spec, prepared.study
    objective = tagged(make_objective(prepared.space.suggest, prepared.context, prepared.resources))
    guard = _StopAfterFailures(MAX_FAILURES_IN_A_ROW)
    for time_left in rounds(study, spec.trials, timeout=spec.timeout):  # returns at once if the study is done
        study.optimize(  # no n_trials: failed trials do not count; StopWhenCovered counts the whole study
            objective,
            timeout=time_left,
            catch=(TrialFailed,),
            callbacks=[StopWhenCovered(spec.trials), guard, *callbacks],
        )
        if guard.reason is not None:
            raise StudyAborted(f"{guard.reason}; fix the setup, then run the same command to resume")
    resources = prepared.resources
    finish_study(study, resources.artifact_store, device=resources.settings.device, data=resources.data)
