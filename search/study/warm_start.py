"""Warm starts (--warm-start): the best configurations of earlier studies of the same space, queued first.

A source trial's parameters are replayed through this study's space on this study's backbones: a
parameter the space asks for and whose value its distribution holds is kept, anything else (a cut
point another backbone has, a branch the space no longer offers) is dropped and left to the sampler.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FixedTrial, FrozenTrial

from search.errors import UserError
from search.study.record import StudyRecord, completed_trials, read_record
from search.study.trial_facts import feasible
from search.training.configs import BACKBONE_PARAM, SpaceContext
from spaces import Space

log = logging.getLogger(__name__)

FROM_EACH_SOURCE = 3  # best trials a source gives: its best alone may be a lucky draw on 200 photos


class _Replay(FixedTrial):
    """A dry run of the space that answers each suggestion from the source's parameters where they apply.

    Where they do not, it answers a fallback so the space can go on; only the applied values are
    kept (`applied`), and the study's sampler draws the rest.
    """

    def __init__(self, source: dict[str, Any], source_backbone: str | None) -> None:
        super().__init__(source)
        self.source_backbone = source_backbone
        self.applied: dict[str, Any] = {}

    def _source_value(self, name: str) -> tuple[bool, Any]:
        """The source's value for a name, also across `name` / `name@backbone` of the same backbone."""
        candidates = [name]
        suffix = f"@{self.source_backbone}"
        if self.source_backbone and name.endswith(suffix):
            candidates.append(name.removesuffix(suffix))
        elif self.source_backbone:
            candidates.append(name + suffix)
        for candidate in candidates:
            if candidate in self._params:
                return True, self._params[candidate]
        return False, None

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        found, value = self._source_value(name)
        if found and _holds(distribution, value):
            self.applied[name] = value
        else:
            value = _fallback(distribution)
        self._suggested_params[name] = value
        self._distributions[name] = distribution
        return value


def _holds(distribution: BaseDistribution, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):  # a categorical's unknown choice, a value of another type
        return False


def _fallback(distribution: BaseDistribution) -> Any:
    """A value that lets the space go on past a parameter the source cannot answer: the last choice
    (a layer used, a stage trained: the branch with more after it), or the middle of a range."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[-1]
    middle = (distribution.low + distribution.high) / 2  # type: ignore[attr-defined]
    return round(middle) if isinstance(distribution, IntDistribution) else middle


def replayed(
    params: dict[str, Any], source_backbone: str | None, space: Space, contexts: dict[str, SpaceContext]
) -> dict[str, Any]:
    """The part of a source trial's parameters that applies to this study's space and backbones."""
    chosen = params.get(BACKBONE_PARAM, source_backbone)
    if chosen not in contexts:
        chosen = next(iter(contexts))
    trial = _Replay(params, params.get(BACKBONE_PARAM, source_backbone))
    with contextlib.suppress(optuna.TrialPruned):  # the space refused the fallbacks' path: keep what applied
        space.suggest(trial, contexts[chosen])
    if len(contexts) > 1:
        trial.applied[BACKBONE_PARAM] = chosen
    return trial.applied


def warm_start_trials(
    sources: Sequence[str],
    storage: optuna.storages.BaseStorage,
    space: Space,
    contexts: dict[str, SpaceContext],
) -> list[dict[str, Any]]:
    """The best configurations of each source study, replayed onto this study; duplicates once."""
    queued: list[dict[str, Any]] = []
    dropped: set[str] = set()
    for name in sources:
        record = _source_record(name, storage, space)
        study = optuna.load_study(study_name=name, storage=storage)
        best = [t for t in completed_trials(study) if feasible(t)][:FROM_EACH_SOURCE]
        if not best:
            raise UserError(f"--warm-start {name}: that study has no complete trial yet; run it first or leave it out")
        for trial in best:
            params = replayed(trial.params, _backbone(record, trial), space, contexts)
            dropped |= {key.partition("@")[0] for key in trial.params} - {key.partition("@")[0] for key in params}
            if params and params not in queued:
                queued.append(params)
    if sources:
        log.info("--warm-start %s: %d configurations queued after the first trials", " ".join(sources), len(queued))
    if dropped:
        log.info("--warm-start: %s do not apply here; the sampler draws them", ", ".join(sorted(dropped)))
    return queued


def check_sources(sources: Sequence[str], storage: optuna.storages.BaseStorage, space: Space) -> None:
    """Each source names a study of this space here: checked before any image is decoded."""
    for name in sources:
        _source_record(name, storage, space)


def _source_record(name: str, storage: optuna.storages.BaseStorage, space: Space) -> StudyRecord:
    record = read_record(storage, name)
    if record is None:
        raise UserError(
            f"--warm-start {name}: no study of that name in this --storage; `optuna studies --storage URL` lists them"
        )
    theirs = record.made.space
    if theirs != space.name:
        raise UserError(
            f"--warm-start {name} is a --space {theirs} study; warm-start from studies of --space {space.name}"
        )
    return record


def _backbone(record: StudyRecord, trial: FrozenTrial) -> str | None:
    try:
        return record.backbone_of(trial)
    except UserError:  # a kind that stands on no backbone
        return None
