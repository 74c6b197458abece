"""An ensemble of a study's trained trials: their class probabilities averaged with the weights a selection gave.

The members share the study's classes and image size, so one batch of decoded images feeds them all;
as one ONNX graph each member's graph reads the same input and a weighted sum gives `probabilities`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from search.kinds import TrainedModel, exporting_onnx, get_kind
from search.models.onnx_graphs import INPUT, PROBABILITIES

ENSEMBLE_KIND = "ensemble"


@dataclass
class EnsembleModel:
    """Weighted members (weights sum to 1), each a study's trial rebuilt: a TrainedModel itself."""

    members: list[TrainedModel]
    weights: list[float]
    trials: list[int]  # each member's trial number in its study
    class_names: tuple[str, ...]
    image_size: int
    kind: str = ENSEMBLE_KIND

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        total = np.zeros((len(images), len(self.class_names)), np.float64)
        for member, weight in zip(self.members, self.weights, strict=True):
            total += weight * member.predict_proba(images)
        return total.astype(np.float32)


def ensemble_onnx_graph(model: EnsembleModel) -> onnx.ModelProto:
    """One graph: every member's own graph (its kind builds it) on the shared input, then their weighted sum."""
    graphs = [exporting_onnx(get_kind(member.kind)).onnx_graph(member) for member in model.members]
    return weighted_sum(graphs, model.weights)


def weighted_sum(graphs: list[onnx.ModelProto], weights: list[float]) -> onnx.ModelProto:
    """The graphs side by side, their `INPUT` shared, their `PROBABILITIES` weighted and summed.

    Each graph's names get a prefix of its own, so that two members' nodes, weights and local
    functions never collide; opsets take the highest version any member needs per domain.
    """
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    functions: list[onnx.FunctionProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    opsets: dict[str, int] = {}
    terms = []
    for index, (graph, weight) in enumerate(zip(graphs, weights, strict=True)):
        prefix = f"member{index}_"
        member = onnx.compose.add_prefix(graph, prefix, rename_inputs=False, rename_outputs=True)
        nodes.extend(member.graph.node)
        initializers.extend(member.graph.initializer)
        functions.extend(member.functions)
        value_info.extend(member.graph.value_info)
        for opset in member.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        scale = f"{prefix}weight"
        initializers.append(helper.make_tensor(scale, TensorProto.FLOAT, [], [weight]))
        nodes.append(helper.make_node("Mul", [prefix + PROBABILITIES, scale], [f"{prefix}weighted"]))
        terms.append(f"{prefix}weighted")
    nodes.append(helper.make_node("Sum", terms, [PROBABILITIES]))
    first = graphs[0].graph
    graph = helper.make_graph(
        nodes,
        "ensemble",
        inputs=[next(i for i in first.input if i.name == INPUT)],
        outputs=[helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", None])],
        initializer=initializers,
        value_info=value_info,
    )
    merged = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        functions=functions,
        ir_version=min(g.ir_version for g in graphs),
    )
    onnx.checker.check_model(merged)
    return merged
