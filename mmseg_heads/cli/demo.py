"""``mmseg-heads demo [--out DIR]``: synthetic data -> training -> evaluation report, no files needed."""

from __future__ import annotations

import time
from pathlib import Path

from mmseg_heads.atomic import check_output_path
from mmseg_heads.config import load_config
from mmseg_heads.data.synthetic import write_demo_dataset
from mmseg_heads.engine.evaluate import evaluate
from mmseg_heads.engine.trainer import train
from mmseg_heads.errors import UserError
from mmseg_heads.report.writers import markdown_report, write_report

#: The demo's experiment; `configs/demo.yaml` is the same recipe for `mmseg-heads train`.
DEMO_CONFIG = """\
# Written by `mmseg-heads demo`. Re-run it with: mmseg-heads train {config} train.out={out}/run2
data: data/demo.yaml
model:
  encoders: {{optical: resnet18, thermal: resnet18}}   # light encoders so the demo runs in minutes on a CPU
  fusion: concat
  decoder_channels: [128, 64, 32, 16, 16]
  heads:
    shapes:   {{source: fused, decoder: shared}}
    hotspots: {{source: fused, decoder: shared}}
loss:
  shapes:   {{ce: 1.0, dice: 1.0}}
  hotspots: {{ce: 1.0, dice: 1.0}}
train: {{epochs: 20, batch_size: 16, crop: 64, lr: 2.0e-3, workers: 0, seed: 0, out: {out}/run}}
eval: {{split: val}}
"""

DEFAULT_OUT = "mmseg_demo"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="make a synthetic two-modality data set, train, evaluate, report",
        description="Writes OUT/data (images, labels, data spec), OUT/demo.yaml (config), OUT/run "
        "(checkpoints, metrics.jsonl) and OUT/run/report_demo_val (report.json, report.md, "
        "report.html).",
        epilog="example: mmseg-heads demo --out /tmp/demo",
    )
    p.add_argument(
        "--out",
        help=f"output folder (default: ./{DEFAULT_OUT}, or a new ./{DEFAULT_OUT}_N if taken)",
    )
    p.add_argument("--epochs", type=int, help="override the demo's number of epochs")


def _fresh_out(requested: str | None) -> Path:
    if requested is not None:
        out = Path(requested)
        check_output_path(out, field="--out")
        taken = [name for name in ("run", "data", "demo.yaml") if (out / name).exists()]
        if taken:  # the demo writes these: never over the user's files
            raise UserError(
                f"already holds {', '.join(taken)}; choose another --out (the demo writes "
                "run/, data/ and demo.yaml there)",
                file=out,
                field="--out",
            )
        return out
    out, n = Path(DEFAULT_OUT), 1
    while out.exists():  # never overwrite an earlier demo
        n += 1
        out = Path(f"{DEFAULT_OUT}_{n}")
    return out


def run(args) -> int:
    started = time.perf_counter()
    out = _fresh_out(args.out)
    write_demo_dataset(out / "data")
    config_path = out / "demo.yaml"
    config_path.write_text(DEMO_CONFIG.format(config=config_path, out=out.as_posix()))
    overrides = [f"train.epochs={args.epochs}"] if args.epochs else []
    config = load_config(config_path, overrides)
    run_dir = train(config)
    report = evaluate(run_dir, ablate=True, with_examples=True)
    paths = write_report(report, run_dir / "report_demo_val", metrics_log=run_dir / "metrics.jsonl")
    print(markdown_report(report))
    print(f"wrote {', '.join(map(str, paths))} in {time.perf_counter() - started:.0f} s")
    return 0
