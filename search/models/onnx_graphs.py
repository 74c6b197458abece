"""PyTorch modules as ONNX graphs that take what a study decodes: uint8 images [N, 3, S, S], any N.

The pixel normalisation the weights expect is folded into the graph (`FromPixels`), so a user of the
exported file only decodes images (search.data.decode) and never standardises them by hand.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import onnx
import torch
from torch import nn

from search.data.pixels import normalize_pixels

OPSET = 18  # the default ONNX domain's version; onnxruntime 1.17+ runs it
INPUT = "images"
PROBABILITIES = "probabilities"
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")


class FromPixels(nn.Module):
    """uint8 images standardised as the weights were trained, then `body`."""

    def __init__(self, body: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.body = body
        self.mean, self.std = mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(normalize_pixels(images, self.mean, self.std))


def module_to_onnx(module: nn.Module, image_size: int, *, output: str) -> onnx.ModelProto:
    """torch.onnx's exporter on `module` (uint8 images in), with the batch dimension left free."""
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)  # 2: a batch of 1 would be baked in
    for name in EXPORTER_LOGGERS:  # their INFO lines narrate graph passes, not anything a user acts on
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.cpu().eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=[output],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=OPSET,
            verbose=False,
        )
    assert program is not None
    return program.model_proto


def chain(first: onnx.ModelProto, second: onnx.ModelProto, link: tuple[str, str], *, prefix: str) -> onnx.ModelProto:
    """One graph: `first`'s output `link[0]` feeds `second`'s input `link[1]`; `second`'s names get `prefix`.

    The outputs of `second` keep their own names, so a reader finds `probabilities` whatever made it.
    """
    second = onnx.compose.add_prefix(second, prefix)
    ir_version = min(first.ir_version, second.ir_version)
    first.ir_version = second.ir_version = ir_version
    merged = onnx.compose.merge_models(first, second, io_map=[(link[0], prefix + link[1])])
    for value in merged.graph.output:
        if value.name.startswith(prefix):
            old, value.name = value.name, value.name.removeprefix(prefix)
            for node in merged.graph.node:
                node.output[:] = [value.name if name == old else name for name in node.output]
                node.input[:] = [value.name if name == old else name for name in node.input]
    onnx.checker.check_model(merged)
    return merged
