"""Search spaces registered by name; a user's own file works too."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from search.errors import UserError
from search.kinds import kind_names
from search.training.configs import SpaceContext

Suggest = Callable[[optuna.trial.BaseTrial, SpaceContext], Any]
FirstTrials = Callable[[SpaceContext], list[dict[str, Any]]]  # parameters of known-good recipes, tried first


@dataclass(frozen=True)
class Space:
    """A named function `(trial, ctx) -> Config`; the config's type picks the trainer."""

    name: str
    suggest: Suggest
    summary: str
    kind: str = "finetune"  # the study kind it proposes configs for (search.kinds), which prepares the data and trains
    first_trials: FirstTrials | None = None  # enqueued on a new study, in order, so no search ends below them
    main_choices: tuple[str, ...] = ()  # its parameters a report compares first (by name, as it suggests them)


_REGISTRY: dict[str, Space] = {}


def register_space(
    name: str, *, kind: str = "finetune", first_trials: FirstTrials | None = None, main_choices: tuple[str, ...] = ()
) -> Callable[[Suggest], Suggest]:
    """Register `suggest` under `name`; registering a name twice is an error."""
    if kind not in kind_names():
        raise ValueError(f"space kind must be one of {kind_names()}, not {kind!r}")

    def add(suggest: Suggest) -> Suggest:
        if name in _REGISTRY:
            raise ValueError(f"search space '{name}' is already registered")
        summary = next(iter((suggest.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[name] = Space(name, suggest, summary, kind, first_trials, main_choices)
        return suggest

    return add


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str) -> Space:
    """A registered space by name, or a user's `.py` file that defines `suggest(trial, ctx)`."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.endswith(".py"):
        return _space_from_file(Path(name))
    raise UserError(
        f"unknown space '{name}'; choose one of: {', '.join(list_spaces())}, or pass a .py file defining suggest(trial, ctx)"
    )


def _space_from_file(path: Path) -> Space:
    if not path.is_file():
        raise UserError(f"space file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"user_space_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"space file {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserError(f"space file {path} failed to import: {type(exc).__name__}: {exc}") from None
    suggest = getattr(module, "suggest", None)
    if not callable(suggest):
        raise UserError(
            f"space file {path} must define suggest(trial, ctx) returning a config (and KIND = 'features' for a FeaturesConfig)"
        )
    kind = getattr(module, "KIND", "finetune")
    if kind not in kind_names():
        raise UserError(f"space file {path}: KIND must be one of {', '.join(kind_names())}, not {kind!r}")
    main_choices = tuple(getattr(module, "MAIN_CHOICES", ()))  # optional, like KIND
    return Space(str(path), suggest, (module.__doc__ or "").strip(), kind, main_choices=main_choices)
