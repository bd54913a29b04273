"""``--window N --overlap F --tta hflip,vflip``: the inference flags of ``evaluate`` and
``predict``, each replacing the run's ``eval`` option of the same name."""

from __future__ import annotations

import argparse

from mmseg_heads.data.transforms import TTA_FLIPS


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "inference (default: the run's eval section; see predict_export.md)"
    )
    group.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="sliding-window side in pixels (a multiple of the model's largest stride)",
    )
    group.add_argument(
        "--overlap",
        type=float,
        metavar="F",
        help="fraction of a window shared with its neighbour, 0 ≤ F < 1 (default 0.5)",
    )
    group.add_argument(
        "--tta",
        metavar="FLIPS",
        help=f"test-time flips, comma-separated ({', '.join(TTA_FLIPS)}) or `none`",
    )


def inference_overrides(args: argparse.Namespace) -> dict:
    """The flags given, as keyword arguments of ``evaluate``/``predict`` (checked there)."""
    tta = None
    if args.tta is not None:
        tta = () if args.tta.strip() == "none" else tuple(t.strip() for t in args.tta.split(","))
    return {"window": args.window, "overlap": args.overlap, "tta": tta}
