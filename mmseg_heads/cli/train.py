"""``mmseg-heads train CONFIG [key=value …]``."""

from __future__ import annotations

import argparse
import sys

from mmseg_heads.cli.inspect import check_data
from mmseg_heads.config import load_config
from mmseg_heads.data.scan import crop_warning
from mmseg_heads.engine.distributed import rank_from_env
from mmseg_heads.engine.trainer import train


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the model a config describes",
        description="Train; writes RUN_DIR/{config.yaml, data_spec.yaml, checkpoints/, metrics.jsonl}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mmseg-heads train configs/demo.yaml train.epochs=5 train.out=runs/try1\n"
        "  mmseg-heads train configs/demo.yaml --resume auto\n"
        "  torchrun --nproc_per_node 2 -m mmseg_heads train configs/demo.yaml   # one process per GPU",
    )
    p.add_argument("config", help="experiment config (YAML)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=3e-4")
    p.add_argument("--data-root", help="folder that replaces the data spec's `root`")
    p.add_argument(
        "--skip-scan", action="store_true", help="do not check every data file before training"
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="read every data file again, ignoring the scan cache",
    )
    p.add_argument(
        "--resume",
        metavar="auto|RUN_DIR",
        help="continue a run from its checkpoints/last.pt (auto: the config's train.out)",
    )


def run(args) -> int:
    config = load_config(args.config, args.overrides, data_root=args.data_root)
    main_process = rank_from_env() == 0  # under torchrun, rank 0 scans and speaks for all
    if main_process and not args.skip_scan:
        scanned = check_data(config.spec, cache=not args.no_cache)
        sizes = scanned.plane_sizes(config.spec, "train")
        warning = crop_warning(sizes, config.train["crop"], config.train["resize"])
        if warning:
            print(f"warning: {config.path}: train.crop: {warning}", file=sys.stderr)
    run_dir = train(config, resume=args.resume)
    if main_process:
        print(f"run directory: {run_dir}")
    return 0
