"""The finetune kind, all in one place: a head on a backbone's cut, its last stages trained with it.

- `kind`: FinetuneKind and what the network kinds share (NetworkKind, FinetuneModel);
- `trainer`: one trial's training loop (LP-FT, layer decay, AMP, early stopping, pruning).

The frozen-prefix cache is search.models.prefix_cache; the space that proposes configs is spaces/finetune.py.
"""

from search.kinds.finetune.kind import FinetuneKind, FinetuneModel, NetworkKind

__all__ = ["FinetuneKind", "FinetuneModel", "NetworkKind"]
