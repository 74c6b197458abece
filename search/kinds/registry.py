"""Study kinds registered by name, the way timm registers models: one instance per kind."""

from __future__ import annotations

from typing import TypeVar

from search.errors import UserError
from search.kinds.base import StudyKind

KindT = TypeVar("KindT", bound=type[StudyKind])
_KINDS: dict[str, StudyKind] = {}


def register_kind(cls: KindT) -> KindT:
    """Class decorator: make `cls` the kind named `cls.name`; a name registered twice is an error."""
    if cls.name in _KINDS:
        raise ValueError(f"study kind '{cls.name}' is already registered")
    _KINDS[cls.name] = cls()
    return cls


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> StudyKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UserError(f"unknown study kind '{name}'; known kinds: {', '.join(_KINDS)}") from None


def kind_of_config(config: object) -> StudyKind:
    """The kind whose config type this is: what a space returned must belong to the study's kind."""
    for kind in _KINDS.values():
        if type(config) is kind.config_type:
            return kind
    known = ", ".join(k.config_type.__name__ for k in _KINDS.values())
    raise UserError(f"the space returned a {type(config).__name__}; it must return one of: {known}")
