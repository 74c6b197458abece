"""Images in: sources (folders, digits, torchvision sets), decoding and splits, augmentation, pixels, sizes, feature cache."""

from search.data.augment import augmentation
from search.data.dataset import Dataset, decode_image_file, decode_source, stratified_split
from search.data.feature_cache import FeatureCache, FeatureExtractor, FeatureKey
from search.data.pixels import normalize_pixels
from search.data.sizing import default_image_size, typical_size
from search.data.sources import TEST, TRAIN, VAL, ImageSource, open_source

__all__ = [
    "TEST",
    "TRAIN",
    "VAL",
    "Dataset",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureKey",
    "ImageSource",
    "augmentation",
    "decode_image_file",
    "decode_source",
    "default_image_size",
    "normalize_pixels",
    "open_source",
    "stratified_split",
    "typical_size",
]
