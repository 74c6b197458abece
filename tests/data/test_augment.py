"""Batched augmentation: every image its own random draw, identity when nothing is asked."""

from __future__ import annotations

import pytest
import torch

from search.data.augment import Augmentation, augmentation
from search.errors import UserError


def _asymmetric(count: int) -> torch.Tensor:
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, 4:12, 2:6] = 255  # a bar on the left: its mirror image is different
    return image.expand(count, -1, -1, -1).clone()


def test_presets_and_none() -> None:
    assert augmentation("none") is None
    assert isinstance(augmentation("light"), Augmentation)
    with pytest.raises(UserError, match="unknown augmentation 'heavy'"):
        augmentation("heavy")


def test_no_change_asked_is_the_identity() -> None:
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    still = Augmentation(degrees=0, translate=0, zoom=0, flip=False, jitter=0)
    assert torch.equal(still(images), images)


def test_each_image_gets_its_own_draw() -> None:
    torch.manual_seed(0)
    out = augmentation("strong")(_asymmetric(8))  # type: ignore[misc]
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.uint8
    assert len({bytes(image.numpy()) for image in out}) == 8


def test_flip_mirrors_about_half_the_batch() -> None:
    torch.manual_seed(0)
    images = _asymmetric(32)
    out = Augmentation(degrees=0, translate=0, zoom=0, flip=True, jitter=0)(images)
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 4 < sum(mirrored) < 28


def test_shift_moves_content() -> None:
    torch.manual_seed(0)
    images = _asymmetric(16)
    out = Augmentation(degrees=0, translate=0.2, zoom=0, flip=False, jitter=0)(images)
    columns = out.float().mean(dim=(1, 2)).argmax(dim=1)  # where the bar's brightest column ended up
    assert len(set(columns.tolist())) > 2
