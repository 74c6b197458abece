"""Any timm CNN or ViT as a Backbone: stages from its `feature_info`, preprocessing from its `pretrained_cfg`.

A timm CNN's `forward_features` runs its children in order; the children that hold a feature level
(timm's `feature_info`: `stages.2`, `blocks.4`, `layer3`, ...) end a stage, so a trial may cut after
any of them and unfreeze stages back from there. A VisionTransformer is an embedding stage (patches,
class token, position embeddings) and then a stage a block, its tokens carried as [N, C, T, 1] maps
so that heads, caches and taps pool them like any map. Other families are refused with one line;
every adapter is checked against the model's own forward_features when it is built. Weights come the way timm users
get them: `--weights FILE` (a state dict or safetensors), else the Hugging Face cache (honouring
HF_HUB_OFFLINE) or a download where the network allows.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from search.data.downloads import network_timeout
from search.errors import UserError

if TYPE_CHECKING:
    from search.models.backbones import Backbone

HEAD_CHILDREN = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pre_logits", "head_hidden_size"}
PROBE_SIZE = 64  # the dummy image that checks a model's stages compose to its features
HUB_HOST = "huggingface.co"
HUB_PROBE_S = 3.0


def _weights_help(name: str) -> str:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # an unknown tag: the plain name's repository is the best guess
        cfg = None
    repo = (cfg.hf_hub_id if cfg is not None else None) or f"timm/{name}"
    return (
        f"give them with --weights FILE (a state dict or .safetensors), put them in the Hugging Face cache "
        f"(`hf download {repo}` where the network allows), or train from random weights with --pretrained none; "
        f"offline, the bundled --backbone efficientnet_lite0 needs nothing"
    )


@contextmanager
def _hub_mode() -> Iterator[None]:
    """The Hugging Face Hub online only when it answers: offline, the cache is read at once, without retries.

    The Hub retries an unreachable host for about a minute per file, printing each retry.
    """
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    if not offline:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=HUB_PROBE_S).close()
        except OSError:
            offline = True
    before, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, offline
    try:
        with network_timeout():
            yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _create(name: str, *, pretrained: bool) -> Any:
    import timm

    try:
        if not pretrained:
            return _with_any_size(timm.create_model, name, pretrained=False)
        with _hub_mode():
            return _with_any_size(timm.create_model, name, pretrained=True)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            from search.models.backbones import list_backbones

            raise UserError(
                f"unknown backbone '{name}'; choose one of: {', '.join(list_backbones())}, "
                "or any convolutional model timm.list_models() gives"
            ) from None
        raise UserError(f"ImageNet weights for {name} could not be loaded ({exc}); {_weights_help(name)}") from None
    except Exception as exc:  # no cache entry and no network, or a truncated download
        raise UserError(
            f"ImageNet weights for {name} are not in the Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}); {_weights_help(name)}"
        ) from None


def _with_any_size(create: Any, name: str, *, pretrained: bool) -> Any:
    """A transformer that takes any input size (position embeddings resampled); CNNs take any size anyway."""
    try:
        return create(name, pretrained=pretrained, dynamic_img_size=True, dynamic_img_pad=True)
    except TypeError:  # a CNN's constructor knows no such arguments
        return create(name, pretrained=pretrained)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file (no code can run from it) or a torch file (tensors only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"--weights {path} is not a readable safetensors file ({type(exc).__name__})") from None
    from search.models.backbones import read_state_dict

    return read_state_dict(path)


def to_map(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens [N, T, C] as a [N, C, T, 1] map: what the heads, caches and taps pool (over every token)."""
    return tokens.transpose(1, 2).unsqueeze(-1)


def to_tokens(grid: torch.Tensor) -> torch.Tensor:
    return grid.squeeze(-1).transpose(1, 2)


class Embed(nn.Module):
    """A vision transformer's first stage: patches, class (and register) tokens, position embeddings, as a map.

    It holds the attributes timm's VisionTransformer._pos_embed reads, so that method runs on it unchanged.
    """

    trace_as_leaf = True  # its forward branches on the input's shape: feature extraction traces it as one call

    def __init__(self, vit: Any) -> None:
        super().__init__()
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.reg_token = vit.reg_token
        self.pos_embed = vit.pos_embed
        self.pos_drop, self.patch_drop, self.norm_pre = vit.pos_drop, vit.patch_drop, vit.norm_pre
        self.dynamic_img_size = vit.dynamic_img_size
        self.no_embed_class = vit.no_embed_class
        self.num_prefix_tokens = vit.num_prefix_tokens
        self._pos_embed_of = type(vit)._pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._pos_embed_of(self, self.patch_embed(x))
        return to_map(self.norm_pre(self.patch_drop(tokens)))


class TokenStage(nn.Module):
    """Transformer blocks (and the final norm, after the last) between token maps."""

    trace_as_leaf = True

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_map(self.parts(to_tokens(x)))


def _transformer_stages(model: Any) -> tuple[nn.ModuleDict, tuple[str, ...]]:
    """A vision transformer as an embedding stage and one stage a block, the last with the final norm."""
    stages = nn.ModuleDict({"embed": Embed(model)})
    blocks = list(model.blocks)
    for index, block in enumerate(blocks):
        last = index == len(blocks) - 1
        stages[f"blocks{index}"] = TokenStage(block, model.norm) if last else TokenStage(block)
    return stages, tuple(name for name in stages if name != "embed")


def _stages(model: Any) -> tuple[nn.ModuleDict, tuple[str, ...]]:
    """The model's trunk as stages, each ending at a feature level (or the last trunk module), and the cut points."""
    levels = [info["module"] for info in model.feature_info]
    children: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in HEAD_CHILDREN:
            break
        if any(level.startswith(f"{name}.") for level in levels):
            children += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            children.append((name, child))
    stages = nn.ModuleDict()
    cuts: list[str] = []
    pending: list[nn.Module] = []
    for name, child in children:
        pending.append(child)
        if name in levels:
            key = name.replace(".", "")  # stages.2 -> stages2: no "_N", which torch.fx reads as a repeated call
            stages[key] = nn.Sequential(*pending)
            cuts.append(key)
            pending = []
    if pending and any(p.numel() for module in pending for p in module.parameters()):
        key = next(name for name, child in children if child is pending[0]).replace(".", "")
        stages[key] = nn.Sequential(*pending)  # what follows the last level (a 1x1 head conv): a cut of its own
        cuts.append(key)
    elif pending:
        last = list(stages)[-1]
        stages[last] = nn.Sequential(*stages[last].children(), *pending)
    return stages, tuple(cuts)


def _is_transformer(model: Any) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


@torch.no_grad()
def _check_sequential(name: str, model: Any, stages: nn.ModuleDict) -> None:
    """The stages in order must compute what the model's own forward_features does, or the adapter is wrong."""
    model.eval()
    x = torch.randn(2, 3, PROBE_SIZE, PROBE_SIZE)
    try:
        expected = model.forward_features(x)
        y = x
        for stage in stages.values():
            y = stage(y)
        y = to_tokens(y) if _is_transformer(model) else y
        same = y.shape == expected.shape and torch.allclose(y, expected, atol=1e-4, rtol=1e-3)
    except Exception:
        same = False
    if not same:
        raise UserError(
            f"timm model {name} does not run as a sequence of its stages (a family without an adapter here); "
            "use a convolutional one (convnext_*, efficientnet_*, resnet*, regnet*, ...) or a ViT (vit_*, *_dinov2)"
        )


def timm_backbone(name: str, pretrained: str, weights_file: Path | None) -> Backbone:
    """A Backbone of any sequential timm CNN by name (with an optional pretrained tag, e.g. `convnext_tiny.fb_in1k`)."""
    from search.models.backbones import load_matching

    model = _create(name, pretrained=pretrained != "none" and weights_file is None)
    cfg = model.pretrained_cfg
    if weights_file is not None:
        classifier = str(cfg.get("classifier") or "classifier")
        state = read_weights_file(weights_file)
        load_matching(model, state, source=f"--weights {weights_file}", ignore_prefix=f"{classifier}.")
        weights = f"file:{weights_file}"
    elif pretrained == "none":
        weights = "random"
    else:
        weights = f"timm:{name}" if "." in name else f"timm:{name}.{cfg.get('tag', '')}".rstrip(".")
    if not hasattr(model, "feature_info") or not hasattr(model, "forward_features"):
        raise UserError(
            f"timm model {name} exposes no feature_info; use a convolutional one (convnext_*, resnet*, ...)"
        )
    stages, cuts = _transformer_stages(model) if _is_transformer(model) else _stages(model)
    _check_sequential(name, model, stages)
    from search.models.backbones import Backbone

    return Backbone(
        name=name,
        stages=stages,
        cut_points=cuts,
        weights=weights,
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        native_image_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0)) if _is_transformer(model) else 0,
        class_token=_is_transformer(model) and getattr(model, "cls_token", None) is not None,
    )
