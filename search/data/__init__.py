"""Images in: sources (folders, digits, torchvision sets), decoding and splits, augmentation, pixels, sizes, feature cache."""

from search._lazy import lazy_exports

_EXPORTS = {
    "TEST": "search.data.sources",
    "TRAIN": "search.data.sources",
    "VAL": "search.data.sources",
    "ImageSource": "search.data.sources",
    "open_source": "search.data.sources",
    "Dataset": "search.data.dataset",
    "decode_source": "search.data.dataset",
    "stratified_split": "search.data.dataset",
    "decode_image_file": "search.data.decode",
    "FeatureCache": "search.data.feature_cache",
    "FeatureExtractor": "search.data.feature_cache",
    "FeatureKey": "search.data.feature_cache",
    "augmentation": "search.data.augment",
    "normalize_pixels": "search.data.pixels",
    "default_image_size": "search.data.sizing",
    "typical_size": "search.data.sizing",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)  # imported on first use: decoding for an ONNX model needs no torch

__all__ = sorted(_EXPORTS)
