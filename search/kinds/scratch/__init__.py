"""The scratch kind: a small CNN trained from random weights with the finetune trainer (`kind`).

Its networks are search.models.scratch; the space that proposes them is spaces/scratch.py.
"""

from search.kinds.scratch.kind import ScratchKind

__all__ = ["ScratchKind"]
