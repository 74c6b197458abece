"""What a study kind is: the small core every kind implements, the capabilities some have, and what
the runner hands them.

A kind decides everything that differs between studies that train a network (finetune) and studies
that fit a classifier on extracted features (features). Its core (StudyKind): its config type, how
its data is prepared, how a trial trains, how its trained parts become a model, how a trial is
described. What only some kinds can do is a capability protocol met by having the methods:
SavesModels (trials keep the very folder `export` writes: search.kinds.model_files), ExportsOnnx,
MeasuresCosts, TakesSource, GivesNetwork, BuildsOwnNetwork. The runner, objective, checkpoints, export
and console ask the study's kind, or whether it has a capability; nothing tests for a kind's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from search.data.dataset import Dataset
from search.data.sizing import default_image_size
from search.data.sources import ImageSource
from search.errors import UserError
from search.models.backbones import Backbone, create_backbone
from search.training.configs import config_from_dict
from search.training.core import Reporter, TrainSettings, TrialResult
from search.training.stage_costs import StageCosts

Part = tuple[torch.Tensor, torch.Tensor]  # uint8 images [N, 3, S, S] and their labels


class TrainedModel(Protocol):
    """Class probabilities for uint8 images decoded at `image_size` (search.data.dataset.decode_image_file)."""

    kind: str
    class_names: tuple[str, ...]
    image_size: int

    def predict_proba(self, images: torch.Tensor) -> np.ndarray: ...


@dataclass(frozen=True)
class SourceTrial:
    """A finished trial of a study that kept its model, as read back from the storage (--from-trial)."""

    study_name: str
    number: int
    kind: str
    config: dict[str, Any]
    model: Any  # its kept TrainedModel; None: the network's shape only (a bundle's weights fill it)
    checkpoint_id: str  # the artifact holding its kept model
    backbone: str
    pretrained: str
    weights: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    classes: tuple[str, ...]
    fingerprint: str
    split: str  # the source study's split: a study on the same data adopts it
    data: dict[str, Any] = field(default_factory=dict)  # the source study's --data, --data-root and --classes

    @property
    def weights_id(self) -> str:
        return f"trial:{self.study_name}:{self.number}:{self.checkpoint_id}"


@dataclass(frozen=True)
class KindInputs:
    """What the runner resolved before a kind prepares its data."""

    backbone: Backbone
    device: torch.device
    image_size: int
    cache_dir: Path
    weights: str  # the backbone's weights, or the source trial's, as keyed into caches
    source: SourceTrial | None = None


@dataclass(frozen=True)
class Prepared:
    """A kind's data, built once per process: the dataset and what its trials share (a cache)."""

    data: Dataset
    shared: Any  # finetune: a FrozenPrefixCache; features: a FeatureCache
    feature_layers: tuple[str, ...] = ()  # layers a features space may tap


@dataclass(frozen=True)
class ModelInputs:
    """What building a trained model needs besides its config and trained parts."""

    backbone: Backbone  # fed with the study's recorded normalisation
    class_names: tuple[str, ...]
    image_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: SourceTrial | None = None  # the trial whose network a features model taps


@dataclass
class InferenceParts:
    """A trial's model split for timing: a trunk trials may share (timed once per key) and the trial's own head."""

    trunk: nn.Module  # normalised images -> what `head` takes
    trunk_key: Hashable | None  # trials with equal keys share the trunk's cost; None: the trunk is the trial's own
    head: Callable[[torch.Tensor], Any]  # trunk output -> class probabilities
    parameters: int  # the network's, plus the numbers a fitted pipeline holds
    size_bytes: int  # what the exported model weighs: float32 weights (+ the fitted pipeline's arrays)
    # one pass that times every trunk key at once: images -> {key: ms at which that key's output was ready}
    tap_times: Callable[[torch.Tensor], dict[Hashable, float]] | None = None
    # trunk keys' times already measured, per batch size (a features study's extraction pass): not timed again
    measured_ms: Mapping[int, Mapping[Hashable, float]] = field(default_factory=dict)


def network_size(module: nn.Module) -> tuple[int, int]:
    """(parameters, bytes) of a network's state: what its exported weights hold."""
    state = module.state_dict()
    return sum(p.numel() for p in module.parameters()), sum(t.numel() * t.element_size() for t in state.values())


class StudyKind(ABC):
    """One kind of study; subclasses register with `search.kinds.register_kind`."""

    name: ClassVar[str]
    config_type: ClassVar[type]

    def study_backbone(self, name: str, *, pretrained: str, weights_file: Path | None) -> Backbone:
        """The backbone a study of this kind stands on when no trial is transferred (--backbone and its weights)."""
        return create_backbone(name, pretrained=pretrained, weights_file=weights_file)

    def input_size(
        self, *, native: int, backbone: Backbone, pretrained: bool, images: int, device: torch.device
    ) -> int:
        """The image size a study of this kind uses when --image-size is not given (search.data.sizing)."""
        return default_image_size(
            native=native,
            backbone_native=backbone.native_image_size,
            pretrained=pretrained,
        )

    @abstractmethod
    def prepare(self, source: ImageSource, inputs: KindInputs) -> Prepared:
        """Decode or extract the data once for this process."""

    def prepare_another(self, prepared: Prepared, source: ImageSource, inputs: KindInputs) -> Prepared:
        """The study's data for another backbone of a study that searches several: that backbone's caches, the same split."""
        again = self.prepare(source, inputs)
        if again.data.keys != prepared.data.keys:
            raise UserError(f"{inputs.backbone.name} read other images of the data than the study's first backbone")
        return replace(again, data=prepared.data)

    @abstractmethod
    def train(
        self, config: Any, prepared: Prepared, backbone: Backbone, reporter: Reporter, settings: TrainSettings
    ) -> TrialResult:
        """Train one trial's config on the prepared data."""

    @abstractmethod
    def test_images(self, prepared: Prepared) -> Part | None:
        """The held test images when this kind keeps them in memory; None: decode them from the source."""

    @abstractmethod
    def trained_model(self, config: Any, parts: Any, inputs: ModelInputs) -> TrainedModel:
        """A trial's model, ready to predict, from its config and trained parts (TrialResult.model)."""

    @abstractmethod
    def describe(self, params: dict[str, Any]) -> list[tuple[str, Any]]:
        """The parameters that tell this kind's trials apart, for one line of the console."""

    def config_of(self, values: dict[str, Any]) -> Any:
        """A trial's stored config (TrialFacts.config) as this kind's config type again."""
        return config_from_dict(self.config_type, values)

    def approach(self, config: dict[str, Any]) -> str:
        """What kind of model a trial's config trains, in a few words (the closing message names the winner's)."""
        return self.name

    def stage_costs(self, prepared: Prepared, backbone: Backbone, device: torch.device) -> StageCosts | None:
        """The study backbone's stages timed on this data, for kinds whose trials train them; None for the rest."""
        return None


# Capabilities a kind has or lacks, asked for by what it can do rather than by a flag or its name.


@runtime_checkable
class TakesSource(Protocol):
    """A kind that stands on another trial's network (--from-trial): finetune trains on its stages, features taps it."""

    def source_backbone(self, source: SourceTrial, base: Backbone) -> Backbone:
        """What a study of this kind stands on when --from-trial names `source`; `base` is its own backbone."""
        ...


@runtime_checkable
class GivesNetwork(Protocol):
    """A kind whose trials train a network another study may stand on (finetune, scratch; not features)."""

    def tap_model(
        self, config: dict[str, Any], model: Any, backbone: Backbone | None, num_classes: int
    ) -> tuple[nn.Sequential, dict[str, str]]:
        """A trial's trained network (its TrainedModel) as layers to tap; model None: the shape only, for a bundle."""
        ...

    def trained_stages(
        self, config: dict[str, Any], model: Any, backbone: Backbone | None, num_classes: int
    ) -> tuple[OrderedDict[str, nn.Module], tuple[str, ...]]:
        """A trial's trained stages (model None: their shape only) and where another study may cut them.

        `backbone` is the one the trial stood on, for kinds that train on one.
        """
        ...


@runtime_checkable
class BuildsOwnNetwork(Protocol):
    """A kind whose trials build their network from their config alone (scratch): it stands on no backbone."""

    def own_network(self, config: Any) -> Backbone:
        """The trial's untrained network, as stages a trainer (and another study) can use like a backbone's."""
        ...


def stands_on_backbone(kind: StudyKind) -> bool:
    """Whether a trial's network is built on the study's backbone (finetune, features) or on its own (scratch)."""
    return not isinstance(kind, BuildsOwnNetwork)


@runtime_checkable
class SavesModels(Protocol):
    """A kind whose trained models are written to a folder and read back: trials keep them, `export` writes them."""

    def write_bundle(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write the model's files into its folder; returns what its bundle.json records about it."""
        ...

    def read_bundle(self, record: dict[str, Any], folder: Path, device: torch.device) -> TrainedModel:
        """The model of a folder written by `write_bundle`."""
        ...


@runtime_checkable
class ExportsOnnx(Protocol):
    """A kind whose trained model is one ONNX graph (`export --format onnx`)."""

    def onnx_graph(self, model: Any) -> Any:
        """The whole model as one onnx.ModelProto: uint8 images [N, 3, S, S] in, `probabilities` [N, classes] out."""
        ...


@runtime_checkable
class MeasuresCosts(Protocol):
    """A kind whose trials' models are timed and weighed (latency, size; the deployment constraints)."""

    def inference_parts(self, config: Any, model: Any, prepared: Prepared, backbone: Backbone) -> InferenceParts:
        """A complete trial's model (TrialResult.model) as parts to time and measure (search.study.costs)."""
        ...


def saving_models(kind: StudyKind) -> SavesModels:
    """The kind as one whose models are saved; a one-line error for the others."""
    if not isinstance(kind, SavesModels):
        raise UserError(f"{kind.name} models cannot be saved or exported: the kind writes no model folder")
    return kind


def exporting_onnx(kind: StudyKind) -> ExportsOnnx:
    """The kind as one whose models are one ONNX graph; a one-line error for the others."""
    if not isinstance(kind, ExportsOnnx):
        raise UserError(f"{kind.name} models have no ONNX graph; export them without --format onnx")
    return kind


def taking_source(kind: StudyKind) -> TakesSource:
    """The kind as one that stands on another trial's network; a one-line error for the others."""
    if not isinstance(kind, TakesSource):
        raise UserError(
            f"--from-trial is not for {kind.name} studies; it transfers a trained network to --space finetune or features"
        )
    return kind


def giving_network(kind: StudyKind) -> GivesNetwork:
    """The kind as one whose trials trained a network to reuse; a one-line error for the others."""
    if not isinstance(kind, GivesNetwork):
        raise UserError(f"a {kind.name} trial has no network to reuse; --from-trial needs a finetune or scratch trial")
    return kind
