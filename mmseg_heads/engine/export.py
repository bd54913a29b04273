"""ONNX export of a :class:`MultiTaskSegmenter`, checked against PyTorch with onnxruntime.

The graph has one input per modality, named by the modality (``N×C×H×W`` float32, normalised as
the data spec says), and one output per task, named by the task (``N×classes×H×W`` logits);
batch, height and width are dynamic (height and width multiples of the model's largest stride).

Exporters are tried in order: torch's default (``dynamo=True``, ``torch.export``) first, then the
TorchScript tracer (``dynamo=False``); both, and the check, are in
:mod:`~mmseg_heads.engine.onnx_graph`. Whichever succeeds is checked before the file is kept:
onnxruntime and PyTorch run the same random inputs at the export size and at a second size, and
the largest absolute difference of any logit must be within the tolerance.

The whole export happens in memory (the exporter's graph, the metadata, the onnxruntime check);
the file is written once, at the end, with :func:`mmseg_heads.atomic.write_atomic`: a full disk
is a :class:`~mmseg_heads.errors.WriteError` naming the file, with no temp file left and an
older export left as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from mmseg_heads.atomic import format_bytes, write_atomic
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import round_up
from mmseg_heads.engine.onnx_graph import (
    PositionalSegmenter,
    SizeCheck,
    check_sizes,
    compare,
    finish_graph,
    random_inputs,
    require_onnx,
    try_exporter,
)
from mmseg_heads.engine.run import load_run
from mmseg_heads.errors import UserError

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_TOLERANCE = 1e-4


class ExportCheckError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


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
        graph, failure = try_exporter(name, wrapper, example, opset)
        if graph is None:
            notes.append(failure or f"{name} exporter failed")
            continue
        opset_used, inputs, outputs = finish_graph(graph, metadata or {})
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
