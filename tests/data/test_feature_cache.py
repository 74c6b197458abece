"""The on-disk feature cache: extracted once, reused without the backbone, rebuilt when damaged, shared safely."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from search.data.dataset import decoded_batches
from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
from search.data.sources import ImageSource, open_source
from search.models.backbones import Backbone
from tests.conftest import write_image_folder

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


@pytest.fixture
def source(tmp_path: Path) -> ImageSource:
    return open_source(str(write_image_folder(tmp_path / "shapes", per_class=8)), root=tmp_path)


class CountingExtractor(FeatureExtractor):
    """The real extractor, counting the images that go through the backbone."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(
            backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=torch.device("cpu")
        )
        self.images_seen = 0

    def __call__(self, images: torch.Tensor, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.images_seen += len(images)
        return super().__call__(images, layers)


def _cache(root: Path, source: ImageSource, backbone: Backbone) -> tuple[FeatureCache, CountingExtractor]:
    extractor = CountingExtractor(backbone)
    key = FeatureKey(
        backbone.name, backbone.weights, SIZE, source.fingerprint(), len(source), backbone.mean, backbone.std
    )
    return FeatureCache(root, key, extractor), extractor


def _fill(cache: FeatureCache, source: ImageSource) -> np.ndarray:
    return cache.ensure(lambda: decoded_batches(source, image_size=SIZE, cache_dir=cache.folder.parent, batch_size=10))


def test_miss_extracts_every_layer_once_then_hits_without_the_backbone(
    tmp_path: Path, source: ImageSource, backbone: Backbone
) -> None:
    cache, extractor = _cache(tmp_path / "cache", source, backbone)
    good = _fill(cache, source)
    assert good.all() and cache.extractions == 1 and extractor.images_seen == len(source)
    first = {layer: cache.layer(layer).copy() for layer in backbone.feature_layers}
    assert first["conv_head"].shape == (len(source), 2, 1280)  # average and max pool per channel

    again, extractor = _cache(tmp_path / "cache", source, backbone)  # another process, same data
    _fill(again, source)
    assert again.extractions == 0 and extractor.images_seen == 0
    for layer, values in first.items():
        np.testing.assert_array_equal(again.layer(layer), values)


def test_other_image_size_or_weights_is_another_cache(tmp_path: Path, source: ImageSource, backbone: Backbone) -> None:
    cache, _ = _cache(tmp_path / "cache", source, backbone)
    _fill(cache, source)
    key = FeatureKey(
        backbone.name, "file:finetuned.pth", SIZE, source.fingerprint(), len(source), backbone.mean, backbone.std
    )
    other = FeatureCache(tmp_path / "cache", key, CountingExtractor(backbone))
    _fill(other, source)
    assert other.extractions == 1 and other.folder != cache.folder


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "foreign", "missing_record"])
def test_damaged_file_is_rebuilt_not_used(tmp_path: Path, source: ImageSource, backbone: Backbone, damage: str) -> None:
    cache, _ = _cache(tmp_path / "cache", source, backbone)
    _fill(cache, source)
    expected = cache.layer("block4").copy()
    target = cache.folder / "block4.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "flip_bytes":  # same size, same header: only the checksum can tell
        data = bytearray(target.read_bytes())
        data[-100:] = bytes(100)
        target.write_bytes(bytes(data))
    elif damage == "foreign":  # a valid file of other features, with its own record, copied over ours
        np.save(target, np.zeros_like(expected))
        record = json.loads(target.with_suffix(".json").read_text())
        record["key"]["weights"] = "someone-else"
        target.with_suffix(".json").write_text(json.dumps(record))
    else:
        target.with_suffix(".json").unlink()

    rebuilt, extractor = _cache(tmp_path / "cache", source, backbone)
    _fill(rebuilt, source)
    assert rebuilt.extractions == 1 and extractor.images_seen == len(source)
    np.testing.assert_allclose(rebuilt.layer("block4"), expected, rtol=1e-5, atol=1e-6)


def test_unreadable_images_are_marked_and_left_out(tmp_path: Path, backbone: Backbone) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=8)
    (folder / "disc" / "broken.png").write_bytes(b"not an image")
    source = open_source(str(folder), root=tmp_path)
    cache, _ = _cache(tmp_path / "cache", source, backbone)
    good = _fill(cache, source)
    assert good.sum() == len(source) - 1
    assert cache.layer("stem").shape[0] == len(source) - 1


FILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from search.models.backbones import create_backbone
    from search.data.dataset import decoded_batches
    from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
    from search.data.sources import open_source
    import torch

    source = open_source(sys.argv[1], root=Path(sys.argv[1]))
    backbone = create_backbone("efficientnet_lite0")
    extractor = FeatureExtractor(backbone.tap_model(), backbone.taps, mean=backbone.mean, std=backbone.std, device=torch.device("cpu"))
    key = FeatureKey(backbone.name, backbone.weights, 32, source.fingerprint(), len(source), backbone.mean, backbone.std)
    cache = FeatureCache(Path(sys.argv[2]), key, extractor)
    cache.ensure(lambda: decoded_batches(source, image_size=32, cache_dir=Path(sys.argv[2]), batch_size=4))
    print("extractions", cache.extractions, flush=True)
    """
)


def test_two_processes_filling_one_cache_end_with_one_valid_set(tmp_path: Path, backbone: Backbone) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=8)
    cache_dir = tmp_path / "cache"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", FILL_SCRIPT, str(folder), str(cache_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    extractions = sorted(int(out.split()[-1]) for out, _ in outputs)
    assert extractions == [0, 1]  # one filled it under the lock; the other waited and read
    (decoded_made,) = (cache_dir / "decoded").iterdir()  # the images were decoded once too, for both
    (folder_made,) = [p for p in cache_dir.iterdir() if p.name != "decoded"]
    for made in (decoded_made, folder_made):
        assert not list(made.glob(".*.tmp*")), "temporary files left behind"
    source = open_source(str(folder), root=folder)
    reader, extractor = _cache(cache_dir, source, backbone)
    _fill(reader, source)
    assert reader.extractions == 0 and extractor.images_seen == 0
    assert all(reader.layer(layer).shape[0] == len(source) for layer in backbone.feature_layers)
