"""``mmseg-heads export CHECKPOINT --out model.onnx [--size H W] [--opset N]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmseg_heads.atomic import check_output_path, refuse_foreign
from mmseg_heads.engine.export import (
    DEFAULT_TOLERANCE,
    EXPORTERS,
    ExportCheckError,
    ExportResult,
    export_checkpoint,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX (one input per modality, one output per task), checked with onnxruntime",
        description=(
            "Writes an ONNX graph with one input per modality (named by the modality,\n"
            "N×C×H×W, normalised as the data spec says) and one output per task (named by the\n"
            "task, N×classes×H×W logits); batch, height and width are dynamic. Before the file\n"
            "is kept, onnxruntime and PyTorch run the same random inputs at the export size and\n"
            "at a larger one; any logit differing by more than --tolerance fails (exit 1)."
        ),
        epilog=(
            "examples:\n"
            "  mmseg-heads export mmseg_demo/run --out demo.onnx\n"
            "  mmseg-heads export runs/myops/checkpoints/best.pt --out myops.onnx --size 256 224"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="run directory (uses checkpoints/best.pt) or checkpoint file")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument(
        "--size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="example input size, multiples of the model's largest stride (default: the crop)",
    )
    p.add_argument(
        "--opset", type=int, metavar="N", help="ONNX opset version (default: the exporter's)"
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="auto",
        help="auto: torch's default (dynamo) exporter, then the TorchScript one (default)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest |onnxruntime - PyTorch| accepted on any logit (default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file that export did not write",
    )


def summary(result: ExportResult) -> str:
    lines = [f"wrote {result.path} (exporter {result.exporter}, opset {result.opset})"]
    lines += [f"  note: {note}" for note in result.notes]
    for kind, values in (("input", result.inputs), ("output", result.outputs)):
        lines += [
            f"  {kind} {name}: [{', '.join(map(str, shape))}]" for name, shape in values.items()
        ]
    lines += [f"  check {check.describe()}" for check in result.checks]
    return "\n".join(lines)


def exported_by_us(path: Path) -> bool:
    """Whether ``path`` is an ONNX file ``export`` wrote (its metadata names a checkpoint)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX, or onnx missing: not ours
        return False
    return any(p.key == "mmseg_heads.checkpoint" for p in model.metadata_props)


def run(args) -> int:
    check_output_path(args.out, field="--out", folder=False)
    out = Path(args.out)
    if not args.overwrite:
        refuse_foreign([out], exported_by_us, "--out", writer="export", overwrite="--overwrite")
    try:
        result = export_checkpoint(
            args.checkpoint,
            args.out,
            size=tuple(args.size) if args.size else None,
            opset=args.opset,
            exporter=args.exporter,
            tolerance=args.tolerance,
        )
    except ExportCheckError as exc:
        print(
            f"error: the ONNX graph does not match PyTorch, nothing written: {exc}", file=sys.stderr
        )
        return 1
    print(summary(result))
    return 0
