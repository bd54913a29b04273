"""``mmseg-heads predict CHECKPOINT INPUT… --out DIR [--modality NAME=PATH …] [--overlay]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmseg_heads.atomic import check_output_path
from mmseg_heads.cli.inference_flags import add_inference_flags, inference_overrides
from mmseg_heads.engine.predict import predict
from mmseg_heads.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment files: one mask per task per input (PNG, or NIfTI for NIfTI input)",
        description=(
            "Each INPUT is matched to a modality and a sample id by the data spec's `files`\n"
            "patterns; the other modalities of that id are found with their patterns under the\n"
            "same root. Or name one sample's files with --modality NAME=PATH.\n"
            "Writes DIR/<task>/<id>.png (palette PNG of class indices), or\n"
            "DIR/<task>/<id>.nii.gz with the input's affine and grid for NIfTI input."
        ),
        epilog=(
            "examples:\n"
            "  mmseg-heads predict mmseg_demo/run mmseg_demo/data/optical/img0100.png --out pred\n"
            "  mmseg-heads predict mmseg_demo/run mmseg_demo/data/optical --out pred   # a folder\n"
            "  mmseg-heads predict mmseg_demo/run/checkpoints/best.pt --out pred \\\n"
            "      --modality optical=photo.png --modality thermal=heat.png --overlay"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="run directory (uses checkpoints/best.pt) or checkpoint file")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="a file of any modality, a folder (its files of the first modality, or the data "
        "folder the spec describes) or a glob pattern (put these first)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="one sample's file of modality NAME (repeat for each modality)",
    )
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="another data spec with the same modalities and tasks: its file patterns and "
        "normalisation are used (another layout on disk)",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="also write DIR/<task>/<id>_overlay.png: the first modality with the mask blended",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in DIR that predict did not write (its own masks are always replaced)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="segment without a modality whose file is missing, instead of failing",
    )
    p.add_argument(
        "--batch-size", type=int, default=8, metavar="N", help="planes per forward pass (default 8)"
    )
    p.add_argument(
        "--device", metavar="D", help="cpu, cuda, cuda:1 … (default: CUDA where available)"
    )
    add_inference_flags(p)


def run(args) -> int:
    if args.batch_size < 1:
        raise UserError(f"must be at least 1, got {args.batch_size}", field="--batch-size")
    check_output_path(args.out, field="--out")
    written = predict(
        args.checkpoint,
        args.inputs,
        Path(args.out),
        modality_files=args.modality,
        data=args.data,
        overlay=args.overlay,
        allow_missing=args.allow_missing,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        **inference_overrides(args),
    )
    for path in written:
        print(f"wrote {path}")
    return 0
