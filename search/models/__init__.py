"""Networks: pretrained backbones as named stages, classification heads, the frozen-prefix activation cache."""

from search.models.backbones import Backbone, create_backbone, list_backbones, register_backbone
from search.models.heads import build_head
from search.models.prefix_cache import FrozenPrefixCache

__all__ = ["Backbone", "FrozenPrefixCache", "build_head", "create_backbone", "list_backbones", "register_backbone"]
