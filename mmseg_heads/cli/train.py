"""``mmseg-heads train CONFIG [key=value …]`` and ``train --resume RUN_DIR [--resume-with-changes]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmseg_heads.cli.inspect import check_data
from mmseg_heads.config import Config, apply_overrides, config_from_dict, load_config
from mmseg_heads.data.scan import crop_warning
from mmseg_heads.engine.distributed import rank_from_env
from mmseg_heads.engine.resume import changes_error, config_changes, resolve_resume, run_config
from mmseg_heads.engine.trainer import train
from mmseg_heads.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the model a config describes",
        description="Train; writes RUN_DIR/{config.yaml, data_spec.yaml, checkpoints/, metrics.jsonl}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mmseg-heads train configs/demo.yaml train.epochs=5 train.out=runs/try1\n"
        "  mmseg-heads train --resume runs/try1          # continue a run exactly as it started\n"
        "  mmseg-heads train --resume runs/try1 --resume-with-changes train.epochs=10\n"
        "  torchrun --nproc_per_node 2 -m mmseg_heads train configs/demo.yaml   # one process per GPU",
    )
    p.add_argument(
        "config", nargs="?", help="experiment config (YAML); with --resume RUN_DIR: optional"
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=3e-4")
    p.add_argument(
        "--data-root",
        help="folder that replaces the data spec's `root` (with --resume: where the run's data "
        "is now, if it moved)",
    )
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
        help="continue a run from its checkpoints/last.pt with the config it started with "
        "(auto: the config's train.out)",
    )
    p.add_argument(
        "--resume-with-changes",
        action="store_true",
        help="apply the settings of CONFIG/overrides that differ from the run's (each printed "
        "and recorded) instead of refusing them",
    )
    p.set_defaults(usage_error=p.error)  # argparse's own message, usage line included


def config_and_overrides(args) -> tuple[str | None, list[str]]:
    """``train --resume RUN key=value``: the first override lands in ``config``; give it back."""
    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        return None, [args.config, *args.overrides]
    return args.config, list(args.overrides)


def resumed_config(args, path: str | None, overrides: list[str]) -> tuple[Config, Path, dict]:
    """``(config to train with, run directory, changes to apply)`` for ``--resume``: the run's
    own config, unless CONFIG/overrides differ from it and ``--resume-with-changes`` says so;
    ``--data-root`` replaces the run's data root either way (moved data is no change)."""
    if path is None:
        if args.resume == "auto":
            raise UserError("--resume auto needs the CONFIG whose train.out holds the run")
        run_dir = Path(args.resume)
        run = run_config(run_dir, data_root=args.data_root)
        raw = apply_overrides(run.raw, overrides, str(run.path))
        given = config_from_dict(raw, run.spec, run.path)
        file = run_dir / "checkpoints" / "last.pt"
    else:
        given = load_config(path, overrides, data_root=args.data_root)
        run_dir = resolve_resume(given, args.resume)
        run = run_config(run_dir, data_root=args.data_root)
        file = given.path
    given.raw["train"]["out"] = str(run_dir)
    changes = config_changes(run, given)
    if changes and not args.resume_with_changes:
        raise changes_error(run_dir, changes, file)
    return (given if changes else run), run_dir, changes


def run(args) -> int:
    path, overrides = config_and_overrides(args)
    if args.resume_with_changes and not args.resume:
        raise UserError("needs --resume RUN_DIR (the run to change)", field="--resume-with-changes")
    if args.resume:
        config, resume, changes = resumed_config(args, path, overrides)
    elif path is None:
        args.usage_error("give a CONFIG to train (or --resume RUN_DIR to continue a run)")
    else:
        config, resume, changes = load_config(path, overrides, data_root=args.data_root), None, {}
    main_process = rank_from_env() == 0  # under torchrun, rank 0 scans and speaks for all
    if main_process and not args.skip_scan:
        scanned = check_data(config.spec, cache=not args.no_cache)
        sizes = scanned.plane_sizes(config.spec, "train")
        warning = crop_warning(sizes, config.train["crop"], config.train["resize"])
        if warning:
            print(f"warning: {config.path}: train.crop: {warning}", file=sys.stderr)
    run_dir = train(config, resume=resume, changes=changes)
    if main_process:
        print(f"run directory: {run_dir}")
    return 0
