"""What a study stores, typed: the spec asked for, what the runner resolved, the data, its split, the test score.

This is the one module that reads and writes study attributes by name and that reaches into
Optuna's private `Study._storage` / `Study._study_id` (Optuna offers no public way to read a study's
system attributes or artifact metadata from a Study object). Everything else asks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import FrozenTrial, TrialState

from search.data.dataset import Dataset
from search.data.sources import class_counts
from search.errors import UserError
from search.kinds import SourceTrial, StudyKind, get_kind, giving_network
from search.study.checkpoints import CHECKPOINT_ATTR, load_kept_model
from search.study.spec import StudySpec
from search.study.trial_facts import CONFIG, FAIL_REASON, feasible, objective_value
from search.training.configs import BACKBONE_PARAM
from search.training.stage_costs import StageCosts

SPEC_ATTR = "spec"  # user attribute: the StudySpec as asked for (password masked)
RESOLVED_ATTR = "resolved"  # user attribute: what the runner decided (kind, device, image size, weights, normalisation)
DATA_ATTR = "data"  # user attribute: the data's name, fingerprint, classes and counts
TEST_ATTR = "test_evaluation"  # user attribute: the best trial's scores on the test split
STAGE_COSTS_ATTR = "stage_costs"  # user attribute: per device type, each backbone stage's measured cost
SPLIT_ATTR = "data_split"  # system attribute: the split, one character per item; every worker needs it
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Resolved:
    """What the runner decided for a study, beside what was asked."""

    kind: str
    device: str
    image_size: int
    backbone_weights: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # --from-trial: the source trial ("STUDY:N"), its kind, classes, data fingerprint and whether it is this data
    source: dict[str, Any] | None = None
    backbone: str | None = None  # what the networks stood on: --backbone, "scratch", or "trial STUDY:N"
    # a study that searches several backbones: each one's weights, mean and std (the fields above are the first's)
    backbones: dict[str, dict[str, Any]] | None = None

    @property
    def searched(self) -> tuple[str, ...]:
        """The backbones a study searches among; empty when it stands on one."""
        return tuple(self.backbones or ())

    def normalization_of(self, backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the study fed `backbone`."""
        facts = (self.backbones or {}).get(backbone)
        return (tuple(facts["mean"]), tuple(facts["std"])) if facts else (self.mean, self.std)

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Resolved | None:
        r = attrs.get(RESOLVED_ATTR)
        if r is None:
            return None
        return cls(
            r["kind"],
            r["device"],
            int(r["image_size"]),
            r["backbone_weights"],
            tuple(r["mean"]),
            tuple(r["std"]),
            r.get("source"),
            r.get("backbone"),
            r.get("backbones"),
        )


@dataclass(frozen=True)
class DataRecord:
    """The data a study was made with, so another run can tell whether it is the same."""

    name: str
    fingerprint: str
    classes: tuple[str, ...]
    images: int
    class_counts: list[int]
    split_counts: dict[str, int]
    image_size: int

    @classmethod
    def of(cls, data: Dataset) -> DataRecord:
        return cls(
            name=data.name,
            fingerprint=data.fingerprint,
            classes=data.class_names,
            images=len(data.labels),
            class_counts=class_counts(data.labels.numpy(), data.num_classes),
            split_counts=data.split_counts(),
            image_size=data.image_size,
        )

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> DataRecord | None:
        r = attrs.get(DATA_ATTR)
        if not r:
            return None
        return cls(
            r["name"],
            r["fingerprint"],
            tuple(r["classes"]),
            r["images"],
            r["class_counts"],
            r["split_counts"],
            r["image_size"],
        )

    def change_to(self, data: Dataset) -> str | None:
        """What differs in `data` from this record, in words; None when it is the same data."""
        if self.fingerprint == data.fingerprint:
            return None
        if self.name != data.name:
            return f"'{self.name}' -> '{data.name}'"
        if self.classes != data.class_names:
            return f"classes {list(self.classes)} -> {list(data.class_names)}"
        return f"{self.images} images in {len(self.classes)} classes -> {len(data.labels)} images in {data.num_classes} classes"


@dataclass(frozen=True)
class StudyRecord:
    """Everything a study stores about itself, read in one go."""

    name: str
    spec: StudySpec | None  # as asked for; None: a study run_study.py did not make
    resolved: Resolved | None
    data: DataRecord | None
    split: str | None
    trials: int
    test: dict[str, Any] | None

    @property
    def image_size(self) -> int | None:
        return self.resolved.image_size if self.resolved else None

    def backbone_of(self, trial: FrozenTrial) -> str:
        """The backbone a trial stood on: its `backbone` parameter in a study that searches several."""
        return str(trial.params.get(BACKBONE_PARAM) or self.made.backbone)

    @property
    def made(self) -> StudySpec:
        """The spec of a study run_study.py made; a one-line error for any other study."""
        if self.spec is None:
            raise UserError(f"study '{self.name}' holds no spec; it was not made by run_study.py")
        return self.spec

    def kind(self) -> StudyKind:
        if self.resolved is None:
            raise UserError(f"study '{self.name}' records no setup; it was not made by run_study.py")
        return get_kind(self.resolved.kind)


def read_record(storage: optuna.storages.BaseStorage, name: str) -> StudyRecord | None:
    """The study's record, or None when the storage has no study of that name."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    attrs = dict(storage.get_study_user_attrs(study_id))
    return StudyRecord(
        name=name,
        spec=StudySpec.from_record(attrs[SPEC_ATTR]) if SPEC_ATTR in attrs else None,
        resolved=Resolved.from_attrs(attrs),
        data=DataRecord.from_attrs(attrs),
        split=storage.get_study_system_attrs(study_id).get(SPLIT_ATTR),
        trials=len(storage.get_all_trials(study_id, deepcopy=False)),
        test=attrs.get(TEST_ATTR),
    )


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def record_of(study: optuna.Study) -> StudyRecord:
    record = read_record(storage_of(study), study.study_name)
    assert record is not None  # the study exists: it was loaded from this storage
    return record


def write_setup(study: optuna.Study, spec: dict[str, Any], resolved: Resolved) -> None:
    study.set_user_attr(SPEC_ATTR, spec)
    study.set_user_attr(RESOLVED_ATTR, resolved.to_record())


def _stage_costs_key(backbone: str, device: str) -> str:
    return f"{backbone}@{device}"


def read_stage_costs(study: optuna.Study, backbone: str, device: str) -> StageCosts | None:
    """The stage costs of `backbone` measured for this study on a device of this type, if a run measured them."""
    record = study.user_attrs.get(STAGE_COSTS_ATTR, {}).get(_stage_costs_key(backbone, device))
    return StageCosts.from_record(record) if record else None


def write_stage_costs(study: optuna.Study, backbone: str, costs: StageCosts) -> None:
    """Keep the measurement, so that every worker and resume on this kind of device plans the same trials."""
    key = _stage_costs_key(backbone, costs.device)
    study.set_user_attr(STAGE_COSTS_ATTR, study.user_attrs.get(STAGE_COSTS_ATTR, {}) | {key: costs.to_record()})


def claim_split(study: optuna.Study, data: Dataset) -> str:
    """Store this data's split unless another worker stored one first; returns the study's split."""
    storage = storage_of(study)
    written = storage.get_study_system_attrs(study._study_id).get(SPLIT_ATTR)
    if written is not None:
        return str(written)
    storage.set_study_system_attr(study._study_id, SPLIT_ATTR, data.encoded_split())
    study.set_user_attr(DATA_ATTR, DataRecord.of(data).to_record())
    return data.encoded_split()


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best first in the study's direction, the feasible ones before any infeasible one.

    The first is the study's best only when it is feasible (Optuna's best_trial agrees).
    """
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    return sorted(done, key=lambda t: (feasible(t), sign * (objective_value(t) or 0.0)), reverse=True)


def best_completed(study: optuna.Study) -> FrozenTrial | None:
    """The study's best trial: the best feasible completed one, or None."""
    done = completed_trials(study)
    return done[0] if done and feasible(done[0]) else None


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def stored_test(study: optuna.Study) -> dict[str, Any] | None:
    """The stored test evaluation if it is for the current best trial, else None."""
    best = best_completed(study)
    stored = study.user_attrs.get(TEST_ATTR)
    if best is None or not isinstance(stored, dict) or stored.get("trial") != best.number:
        return None
    return stored


def store_test(study: optuna.Study, evaluation: dict[str, Any]) -> None:
    study.set_user_attr(TEST_ATTR, evaluation)


def trial_artifacts(study: optuna.Study, trial: FrozenTrial) -> dict[str, str]:
    """The trial's artifact ids by file name (the newest upload wins a repeated name)."""
    return {meta.filename: meta.artifact_id for meta in get_all_artifact_meta(trial, storage=storage_of(study))}


def fail_running_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial failed, saying why; False when it finished (or was failed) meanwhile."""
    storage = storage_of(study)
    try:
        storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
        return storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # it finished, or a heartbeat check failed it first
        return False


def stale_trial_retry(study: optuna.Study) -> Callable[[optuna.Study, FrozenTrial], None] | None:
    """The storage's heartbeat retry callback (RDB storages, cached or not), which queues a failed trial again."""
    retry_of = getattr(storage_of(study), "get_heartbeat_stale_trial_callback", None)
    return retry_of() if retry_of is not None else None


def parse_from_trial(text: str) -> tuple[str, int]:
    study_name, _, number = text.rpartition(":")
    if not study_name or not number.isdigit():
        raise UserError(f"--from-trial '{text}' must be STUDY:NUMBER, e.g. finetune-digits-efficientnet_lite0:12")
    return study_name, int(number)


def _complete_trial(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> FrozenTrial:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        raise UserError(f"there is no study '{study_name}' in this storage; check --from-trial or --storage") from None
    try:
        trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))
    except KeyError:
        raise UserError(f"study '{study_name}' has no trial {number}") from None
    if trial.state != TrialState.COMPLETE:
        raise UserError(f"trial {number} of study '{study_name}' is {trial.state.name.lower()}, not complete")
    return trial


def read_source_trial(text: str, storage: optuna.storages.BaseStorage, store: Any) -> SourceTrial:
    """The trial named by `STUDY:NUMBER` with its kept model; clear errors when it has none."""
    study_name, number = parse_from_trial(text)
    trial = _complete_trial(storage, study_name, number)
    record = read_record(storage, study_name)
    assert record is not None
    if record.resolved is None or record.data is None:
        raise UserError(f"study '{study_name}' holds no data record; it was not made by run_study.py")
    kind = record.kind()
    giving_network(kind)  # before reading its model: a features trial has no network to give
    backbone = record.backbone_of(trial)
    mean, std = record.resolved.normalization_of(backbone)
    return SourceTrial(
        study_name=study_name,
        number=number,
        kind=kind.name,
        config=dict(trial.user_attrs[CONFIG]),
        model=load_kept_model(trial, store, study_name=study_name),
        checkpoint_id=str(trial.user_attrs[CHECKPOINT_ATTR]),
        backbone=backbone,
        pretrained=record.made.pretrained,
        weights=str(record.made.weights) if record.made.weights else None,
        mean=mean,
        std=std,
        image_size=record.resolved.image_size,
        classes=record.data.classes,
        fingerprint=record.data.fingerprint,
        split=record.split or "",
        data={k: record.made.to_record()[k] for k in ("data", "data_root", "classes")},
    )
