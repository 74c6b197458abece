"""The features kind, all in one place: a classifier fitted on pooled frozen features.

- `kind`: FeaturesKind (data streamed once into the feature cache, a trial's model, its bundle and ONNX graph);
- `trainer`: one trial's scikit-learn pipeline on the cached features, reported and pruned;
- `pipeline_files`: fitted pipelines as skops files, never pickles;
- `child_fit`: a fit in a child process, so a prune or Ctrl-C ends a native fit at once.

The feature cache itself is search.data.feature_cache; the space that proposes configs is spaces/features.py.
"""

from search.kinds.features.kind import FeaturesKind, FeaturesModel

__all__ = ["FeaturesKind", "FeaturesModel"]
