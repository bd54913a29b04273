"""Training next to a busy process: ``train.threads: auto`` against torch's default (all cores).

Trains the demo's model (two ResNet-18s, demo data, batch 4, 64² crops … the sizes below) for a
few epochs in a fresh process per variant and reads the epoch times it logs. Variants, alternated
over ``--reps`` rounds: ``threads = auto`` and ``threads = <all usable cores>`` (what torch does
without us), each on the machine as it is ("quiet") and next to one single-threaded busy process
(a Python spin loop started just before, stopped just after). The headline is, per setting, the
median epoch time next to the busy process over the median quiet one (issue 19's target for
``auto``: ≤ 2.5×; torch's default collapsed by ~29× on 2 cores).

    python bench/threads.py
    python bench/threads.py --quick
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import yaml

from mmseg_heads.data.synthetic import write_demo_dataset
from mmseg_heads.engine.threads import usable_cores

EPOCH = re.compile(r"epoch \d+/\d+: .*; ([0-9.]+) s")
SPIN = "while True:\n    pass\n"


def write_config(folder: Path, spec: Path, threads, epochs: int, crop: int) -> Path:
    config = {
        "data": str(spec),
        "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}, "pretrained": "none"},
        "train": {"epochs": epochs, "batch_size": 4, "crop": crop, "workers": 0,
                  "threads": threads, "precision": "fp32", "out": str(folder / "run")},
    }  # fmt: skip
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def epoch_seconds(config: Path) -> list[float]:
    """The epoch times a training run logs (the first, warming up, is dropped when there are
    more)."""
    done = subprocess.run(
        [sys.executable, "-m", "mmseg_heads", "train", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    times = [float(m.group(1)) for m in EPOCH.finditer(done.stderr)]
    return times[1:] if len(times) > 1 else times


def run_variant(root: Path, spec: Path, threads, busy: bool, args) -> float:
    with tempfile.TemporaryDirectory(dir=root) as folder:
        config = write_config(Path(folder), spec, threads, args.epochs, args.crop)
        spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
        try:
            return statistics.median(epoch_seconds(config))
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--samples", type=int, default=32, help="training images of the demo data")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.samples, args.crop = 1, 8, 32
    common.setup(args, reps=3, warmup=0)
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = write_demo_dataset(root / "data", train=args.samples, val=4, size=64)
        variants = {
            f"{setting}/{load}": (threads, load == "busy")
            for setting, threads in (("auto", "auto"), (f"{cores} threads", cores))
            for load in ("quiet", "busy")
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.reps):  # alternate: every variant once per round
            for name, (threads, busy) in variants.items():
                times[name].append(run_variant(root, spec, threads, busy, args))
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {
        setting: medians[f"{setting}/busy"] / medians[f"{setting}/quiet"]
        for setting in ("auto", f"{cores} threads")
    }
    common.report(
        "threads",
        args,
        settings={
            "cores": cores,
            "epochs": args.epochs,
            "crop": args.crop,
            "samples": args.samples,
            "batch_size": 4,
        },  # fmt: skip
        rows=[{"variant": n, "epoch_s": medians[n], "rounds": times[n]} for n in variants],
        ratios={f"busy/quiet {k}": v for k, v in ratios.items()},
        targets={"busy/quiet auto": common.target(ratios["auto"], "<=", 2.5)},
        tables=[
            common.table(
                ["variant", "epoch (s, median)", "rounds"],
                [[n, medians[n], ", ".join(f"{t:.2f}" for t in times[n])] for n in variants],
            )
        ],
        notes=[
            "busy: one single-threaded Python spin loop running beside the training process; "
            "'quiet' is the machine as it was (its load average is printed above)"
        ],
    )


if __name__ == "__main__":
    main()
