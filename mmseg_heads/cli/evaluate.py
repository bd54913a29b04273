"""``mmseg-heads evaluate RUN_DIR|CHECKPOINT [--checkpoint best|last|step_N] [--data SPEC] [--split S] [--out DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmseg_heads.atomic import check_output_path
from mmseg_heads.cli.inference_flags import add_inference_flags, inference_overrides
from mmseg_heads.engine.checkpoint import NUMBERED_KINDS, resolve_checkpoint
from mmseg_heads.engine.evaluate import evaluate
from mmseg_heads.engine.run import run_dir_of
from mmseg_heads.report.writers import check_report_folder, markdown_report, write_report


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run or checkpoint: report.json, report.md, report.html",
        description="Per task and class TP/FP/FN, precision, recall, F-beta, IoU and Dice.",
        epilog="example: mmseg-heads evaluate runs/demo --split val",
    )
    p.add_argument("run", help="run directory (uses checkpoints/best.pt) or checkpoint file")
    p.add_argument(
        "--data", help="another data spec with the same modalities and tasks (external test set)"
    )
    p.add_argument("--split", help="split to evaluate (default: the config's eval.split)")
    p.add_argument(
        "--checkpoint",
        type=checkpoint_name,
        metavar="best|last|epoch_N|step_N",
        help="which checkpoint of the run directory: best, last, or a numbered one "
        "(train.checkpoint_every) such as step_8000 (default: best.pt, else last.pt)",
    )
    p.add_argument(
        "--ablate-modalities",
        action="store_true",
        help="also evaluate with each modality missing and report ΔF per task and class",
    )
    p.add_argument(
        "--out",
        help="output folder (default: RUN_DIR/report_<data>_<split>, plus _<checkpoint> other "
        "than best and each inference flag given, e.g. _tta-hflip-vflip)",
    )
    add_inference_flags(p)


def checkpoint_name(text: str) -> str:
    """``--checkpoint``: ``best``, ``last``, ``epoch_<N>`` or ``step_<N>`` (``.pt`` optional)."""
    name = text.removesuffix(".pt")
    kind, _, number = name.partition("_")
    if name in ("best", "last") or (kind in NUMBERED_KINDS and number.isdigit()):
        return name
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a checkpoint of a run: best, last, epoch_<N> or step_<N> (a file: give "
        "its path instead of the run directory)"
    )


def default_out(checkpoint: Path, report: dict, data_name: str, inference: dict) -> Path:
    """``RUN/report_<data>_<split>``; another checkpoint than best.pt adds its name, and each
    inference flag given its value (``_tta-hflip-vflip``, ``_window256``, ``_overlap0.25``): a
    report of other options never replaces this one."""
    suffix = "" if checkpoint.name == "best.pt" else f"_{checkpoint.stem}"
    if inference.get("tta") is not None:
        suffix += "_tta-" + ("-".join(inference["tta"]) or "none")
    if inference.get("window") is not None:
        suffix += f"_window{inference['window']}"
    if inference.get("overlap") is not None:
        suffix += f"_overlap{inference['overlap']:g}"
    return run_dir_of(checkpoint) / f"report_{data_name}_{report['split']}{suffix}"


def run(args) -> int:
    if args.out:
        check_output_path(args.out, field="--out")  # before the evaluation, not after it
    checkpoint = resolve_checkpoint(args.run, args.checkpoint)
    if args.out:  # a report is written only over an earlier report of this run
        check_report_folder(Path(args.out), run_dir_of(checkpoint), field="--out")
    inference = inference_overrides(args)
    report = evaluate(
        checkpoint,
        data=args.data,
        split=args.split,
        ablate=args.ablate_modalities,
        with_examples=True,
        progress=True,
        **inference,
    )
    out = (
        Path(args.out)
        if args.out
        else default_out(checkpoint, report, Path(report["data_spec"]).stem, inference)
    )
    paths = write_report(report, out, metrics_log=Path(report["run_dir"]) / "metrics.jsonl")
    print(markdown_report(report))
    print("wrote " + ", ".join(map(str, paths)))
    return 0
