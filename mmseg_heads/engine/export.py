"""ONNX export of a :class:`MultiTaskSegmenter`, checked against PyTorch with onnxruntime.

The graph has one input per modality, named by the modality (``N×C×H×W`` float32, normalised as
the data spec says), and one output per task, named by the task (``N×classes×H×W`` logits);
batch, height and width are dynamic (height and width multiples of the model's largest stride).

Exporters are tried in order: torch's default (``dynamo=True``, ``torch.export``) first, then the
TorchScript tracer (``dynamo=False``). Whichever succeeds is checked before the file is kept:
onnxruntime and PyTorch run the same random inputs at the export size and at a second size, and
the largest absolute difference of any logit must be within the tolerance.

The whole export happens in memory (the exporter's graph, the metadata, the onnxruntime check);
the file is written once, at the end, with :func:`mmseg_heads.atomic.write_atomic`: a full disk
is a :class:`~mmseg_heads.errors.WriteError` naming the file, with no temp file left and an
older export left as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mmseg_heads.atomic import format_bytes, write_atomic
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import round_up
from mmseg_heads.engine.evaluate import load_run
from mmseg_heads.errors import UserError

if TYPE_CHECKING:
    from onnx import ModelProto

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_TOLERANCE = 1e-4
INSTALL_HINT = 'pip install "mmseg-heads[export]"'


class ExportCheckError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


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


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how it checked it.

    Attributes:
        path: the ONNX file.
        exporter: ``dynamo`` or ``torchscript``: the one whose graph was kept.
        opset: the default-domain opset of the graph.
        inputs: ``{modality: shape}``, ``batch``, ``height`` and ``width`` symbolic.
        outputs: ``{task: shape}``.
        checks: one :class:`SizeCheck` per size checked.
        notes: why earlier exporters were passed over.
    """

    path: Path
    exporter: str
    opset: int
    inputs: dict[str, list]
    outputs: dict[str, list]
    checks: list[SizeCheck]
    notes: list[str] = field(default_factory=list)


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


def check_size(size: tuple[int, int], multiple: int) -> None:
    """Raises a UserError unless both sides are positive multiples of ``multiple``."""
    height, width = size
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise UserError(
            f"{height} {width}: height and width must be positive multiples of {multiple} (the "
            f"model's largest stride), e.g. {round_up(max(height, 1), multiple)} "
            f"{round_up(max(width, 1), multiple)}",
            field="--size",
        )


#: protobuf's limit on one serialised message: an ONNX file with its weights inside.
ONNX_FILE_LIMIT = 2**31 - 1


def check_weight_size(model: nn.Module) -> None:
    """Raises a UserError when the weights alone exceed what one ONNX file can hold.

    Caught before tracing: the exporters would fail deep in protobuf after minutes of work.
    """
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if weights > ONNX_FILE_LIMIT:
        raise UserError(
            f"the model's weights take {format_bytes(weights)}, more than the "
            f"{format_bytes(ONNX_FILE_LIMIT)} one ONNX file can hold; export a smaller model (lighter "
            "encoders, fewer decoder channels), or use the checkpoint with PyTorch",
            field="export",
        )


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


def spec_metadata(spec: DataSpec, multiple: int) -> dict[str, str]:
    """What a consumer of the ONNX file needs to prepare inputs and read outputs."""
    return {
        "mmseg_heads.modalities": json.dumps(
            {
                m.name: {
                    "channels": spec.input_channels()[m.name],
                    "context_slices": spec.context,
                    "normalize": m.normalize,
                    "clip_percentiles": m.clip_percentiles,
                }
                for m in spec.modalities.values()
            }
        ),
        "mmseg_heads.tasks": json.dumps({t.name: list(t.classes) for t in spec.tasks.values()}),
        "mmseg_heads.size_multiple": str(multiple),
    }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(exc: BaseException) -> str:
    """The root cause of an exporter's exception, on one line (torch wraps the real one)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


@contextlib.contextmanager
def _quiet() -> Iterator[list[str]]:
    """Capture what the exporters print, from Python and from C++ (file descriptors 1 and 2), and
    torch's warnings: a failed export dumps its whole graph. Yields a list that holds the
    captured text afterwards, for the caller to log at debug level."""
    captured: list[str] = []
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    buffer = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with (
                    contextlib.redirect_stdout(buffer),
                    contextlib.redirect_stderr(buffer),
                    warnings.catch_warnings(),
                ):
                    warnings.simplefilter("ignore")
                    yield captured
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                sink.seek(0)
                captured.append(buffer.getvalue() + sink.read().decode(errors="replace"))
    finally:
        for fd in saved:
            os.close(fd)
        torch_log.setLevel(level)


def _try_exporter(
    name: str,
    wrapper: PositionalSegmenter,
    example: tuple,
    opset: int | None,
) -> tuple[ModelProto | None, str | None]:
    """Export with one exporter: ``(graph, None)``, or ``(None, why it failed)`` (one line)."""
    graph = None
    with _quiet() as output:
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


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    channels: dict[str, int],
    tasks: list[str],
    size: tuple[int, int],
    opset: int | None = None,
    exporter: str = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``out`` (atomically) after checking it with onnxruntime.

    Args:
        model: a :class:`MultiTaskSegmenter` (moved to the CPU, put in eval mode).
        out: the ``.onnx`` file to write.
        channels: ``{modality: channels}``, in the model's input order.
        tasks: task names, in output order.
        size: ``(height, width)`` of the example input; multiples of ``model.trunk.max_stride``.
        opset: ONNX opset (default: the exporter's).
        exporter: ``auto`` (dynamo, then TorchScript), ``dynamo`` or ``torchscript``.
        tolerance: largest absolute logit difference accepted.
        metadata: stored in the file's ``metadata_props``.

    Raises:
        UserError: onnx/onnxruntime missing, a bad size, weights over 2 GiB, or no exporter could
            export the model.
        WriteError: ``out`` could not be written (a full disk, no permission): no temp file is
            left, an older ``out`` is unchanged.
        ExportCheckError: every exported graph differs from PyTorch by more than ``tolerance``.
    """
    require_onnx()
    model = model.cpu().eval()
    multiple = model.trunk.max_stride
    check_size(size, multiple)
    check_weight_size(model)
    out = Path(out)
    wrapper = PositionalSegmenter(model, list(channels), tasks).eval()
    sizes = check_sizes(size, multiple)
    notes: list[str] = []
    checks_failed = False
    for name in ["dynamo", "torchscript"] if exporter == "auto" else [exporter]:
        example = random_inputs(channels, 1, *size, 0)
        graph, failure = _try_exporter(name, wrapper, example, opset)
        if graph is None:
            notes.append(failure or f"{name} exporter failed")
            continue
        opset_used, inputs, outputs = _finish_graph(graph, metadata or {})
        data = graph.SerializeToString()  # the bytes onnx.save(graph, path) writes
        checks = compare(data, model, channels, tasks, sizes)
        worst = max(check.worst for check in checks)
        if not worst <= tolerance:
            checks_failed = True
            notes.append(
                f"{name} exporter: outputs differ from PyTorch by up to {worst:.3g} > "
                f"{tolerance:g} ({'; '.join(c.describe() for c in checks)})"
            )
            continue
        write_atomic(out, data)  # the only write: WriteError on a full disk, older file kept
        return ExportResult(out, name, opset_used, inputs, outputs, checks, notes)
    if checks_failed:
        raise ExportCheckError("; ".join(notes))
    hint = "; try another --opset or leave it out" if opset is not None else ""
    raise UserError(
        "the model could not be exported: " + "; ".join(notes) + hint,
        field="--opset" if opset is not None else "--exporter" if exporter != "auto" else None,
    )


def _finish_graph(
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


def default_size(crop: int | None, multiple: int) -> tuple[int, int]:
    """The training crop (or 256), rounded up to a multiple of the largest stride."""
    side = round_up(crop or 256, multiple)
    return side, side


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    size: tuple[int, int] | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportResult:
    """Export a run's checkpoint: inputs named by modality, outputs by task, spec in metadata.

    Args:
        checkpoint: a run directory (its ``checkpoints/best.pt``) or a checkpoint file.
        out: the ``.onnx`` file to write.
        size: ``(height, width)`` of the example input (default: the training crop).
        opset: ONNX opset (default: the exporter's).
        exporter: ``auto``, ``dynamo`` or ``torchscript``.
        tolerance: largest absolute logit difference accepted.

    Raises:
        UserError: as :func:`export_onnx`, or a problem with the checkpoint.
        ExportCheckError: as :func:`export_onnx`.
    """
    require_onnx()  # before loading the model: fail fast
    config, model, _, path = load_run(checkpoint)
    spec = config.spec
    multiple = model.trunk.max_stride
    result = export_onnx(
        model,
        out,
        channels=spec.input_channels(),
        tasks=list(spec.tasks),
        size=size or default_size(config.train["crop"], multiple),
        opset=opset,
        exporter=exporter,
        tolerance=tolerance,
        metadata=spec_metadata(spec, multiple) | {"mmseg_heads.checkpoint": str(path.resolve())},
    )
    return result
