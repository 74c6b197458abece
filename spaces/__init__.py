"""Search spaces: one module per space, each registering `suggest(trial, ctx) -> Config`."""

from spaces import features as features
from spaces import finetune as finetune
from spaces import scratch as scratch
from spaces._registry import Space, get_space, list_spaces, register_space

__all__ = ["Space", "get_space", "list_spaces", "register_space"]
