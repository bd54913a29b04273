"""ONNX graphs of a model, made in memory, and onnxruntime's check of them against PyTorch.

Exporters are tried in order by :func:`~mmseg_heads.engine.export.export_onnx`: torch's default
(``dynamo=True``, ``torch.export``) first, then the TorchScript tracer (``dynamo=False``). Each
gives the graph in memory; :func:`compare` runs it with onnxruntime and the model with PyTorch on
the same random inputs.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mmseg_heads.engine.capture import captured_output
from mmseg_heads.errors import UserError

if TYPE_CHECKING:
    from onnx import ModelProto

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "mmseg-heads[export]"'


@dataclass(frozen=True)
class SizeCheck:
    """onnxruntime against PyTorch on one random batch.

    Attributes:
        batch: samples in the batch.
        height: input height.
        width: input width.
        max_abs_diff: ``{task: largest |onnxruntime - PyTorch| over all logits}``.
    """

    batch: int
    height: int
    width: int
    max_abs_diff: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())

    def describe(self) -> str:
        diffs = ", ".join(f"{task} {diff:.2e}" for task, diff in self.max_abs_diff.items())
        return f"{self.batch}×{self.height}×{self.width}: max |diff| {diffs}"


class PositionalSegmenter(nn.Module):
    """Tuples in and out, as an ONNX graph has them: modalities in order, tasks in order.

    Shape:
        forward ``*images``: one ``N×C×H×W`` tensor per modality; returns one ``N×K×H×W``
        tensor per task.
    """

    def __init__(self, model: nn.Module, modalities: list[str], tasks: list[str]):
        super().__init__()
        self.model = model
        self.modalities = list(modalities)
        self.tasks = list(tasks)

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(dict(zip(self.modalities, images, strict=True)))
        return tuple(logits[task] for task in self.tasks)


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``; their absence is the user's to fix, with the command that does.

    Raises:
        UserError: onnx or onnxruntime is not installed.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UserError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): {INSTALL_HINT}",
            field="export",
        ) from exc
    return onnx, onnxruntime


def random_inputs(
    channels: dict[str, int], batch: int, height: int, width: int, seed: int
) -> tuple[torch.Tensor, ...]:
    """One standard-normal ``batch×C×H×W`` tensor per modality (normalised images look so)."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, c, height, width, generator=generator) for c in channels.values()
    )


def _dynamic_names(modalities: list[str], tasks: list[str]) -> dict[str, dict[int, str]]:
    return {name: {0: "batch", 2: "height", 3: "width"} for name in [*modalities, *tasks]}


def _export_dynamo(wrapper: PositionalSegmenter, example: tuple, opset: int | None) -> ModelProto:
    dynamic = torch.export.Dim.AUTO
    # ``forward(*images)``: torch.export sees one argument, a tuple with one tensor per modality.
    shapes = (tuple({0: dynamic, 2: dynamic, 3: dynamic} for _ in example),)
    program = torch.onnx.export(
        wrapper,
        example,
        input_names=wrapper.modalities,
        output_names=wrapper.tasks,
        dynamic_shapes=shapes,
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    graph = program.model_proto  # what program.save(path, external_data=False) writes
    name_dynamic_dims(graph, wrapper.modalities)
    return graph


def name_dynamic_dims(graph: ModelProto, modalities: list[str]) -> None:
    """Rename the symbols torch.export gives the inputs' batch, height and width (``s19``…) to
    ``batch``, ``height`` and ``width``, everywhere in ``graph`` (in place)."""
    names = {0: "batch", 2: "height", 3: "width"}
    renames = {}
    for value in graph.graph.input:
        if value.name in modalities:
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if axis in names and dim.dim_param:
                    renames[dim.dim_param] = names[axis]
    values = [*graph.graph.input, *graph.graph.output, *graph.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _export_torchscript(
    wrapper: PositionalSegmenter, example: tuple, opset: int | None
) -> ModelProto:
    # The tracer warns about the model's Python branches on shapes and on which modalities are
    # present (silenced by _quiet); with every modality given they take one path, which the
    # onnxruntime check verifies at a second size.
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper,
        example,
        buffer,
        input_names=wrapper.modalities,
        output_names=wrapper.tasks,
        dynamic_axes=_dynamic_names(wrapper.modalities, wrapper.tasks),
        opset_version=opset,
        dynamo=False,
    )
    return onnx.load_model_from_string(buffer.getvalue())


#: Each exporter gives the graph in memory: nothing is written before the check has passed.
EXPORT_FUNCTIONS: dict[str, Callable[[PositionalSegmenter, tuple, int | None], ModelProto]] = {
    "dynamo": _export_dynamo,
    "torchscript": _export_torchscript,
}


def check_sizes(size: tuple[int, int], multiple: int) -> list[tuple[int, int, int]]:
    """``(batch, height, width)`` checked: the export size, then a larger, non-square one with
    another batch, so that a dimension frozen into the graph shows up."""
    height, width = size
    return [(1, height, width), (2, height + multiple, width + 2 * multiple)]


def compare(
    onnx_model: bytes | str | Path,
    model: nn.Module,
    channels: dict[str, int],
    tasks: list[str],
    sizes: list[tuple[int, int, int]],
    seed: int = 0,
) -> list[SizeCheck]:
    """Run the ONNX graph (a serialised model, or a file) with onnxruntime and the model with
    PyTorch (fp32) on the same inputs."""
    _, onnxruntime = require_onnx()
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    checks = []
    for index, (batch, height, width) in enumerate(sizes):
        images = random_inputs(channels, batch, height, width, seed + index)
        with torch.inference_mode():
            expected = model(dict(zip(channels, images, strict=True)))
        feeds = {name: image.numpy() for name, image in zip(channels, images, strict=True)}
        got = session.run(tasks, feeds)
        diffs = {
            task: float(np.abs(value - expected[task].float().numpy()).max())
            if value.shape == tuple(expected[task].shape)
            else float("inf")
            for task, value in zip(tasks, got, strict=True)
        }
        checks.append(SizeCheck(batch, height, width, diffs))
    return checks


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(exc: BaseException) -> str:
    """The root cause of an exporter's exception, on one line (torch wraps the real one)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def try_exporter(
    name: str,
    wrapper: PositionalSegmenter,
    example: tuple,
    opset: int | None,
) -> tuple[ModelProto | None, str | None]:
    """Export with one exporter: ``(graph, None)``, or ``(None, why it failed)`` (one line)."""
    graph = None
    # what the exporters print (a failed export dumps its whole graph) goes to the debug log
    with captured_output("torch") as output:
        try:
            graph = EXPORT_FUNCTIONS[name](wrapper, example, opset)
        except ImportError as exc:  # the dynamo exporter needs onnxscript
            failure = f"{name} exporter unavailable ({exc.name or exc} not installed)"
        except Exception as exc:
            failure = f"{name} exporter failed ({_reason(exc)})"
        else:
            failure = None
    log.debug("%s exporter output:\n%s", name, "".join(output))
    return graph, failure


def finish_graph(
    graph: ModelProto, metadata: dict[str, str]
) -> tuple[int, dict[str, list], dict[str, list]]:
    """Add ``metadata`` to ``graph`` (in place), check it with ``onnx.checker`` and describe its
    I/O: ``(opset, {input: shape}, {output: shape})``, symbolic dimensions by name."""
    onnx, _ = require_onnx()
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)

    def shape(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return (
        opset,
        {v.name: shape(v) for v in graph.graph.input},
        {v.name: shape(v) for v in graph.graph.output},
    )
