"""Peak memory of sliding-window inference: a large image in windows vs one window-sized image.

Each variant runs in a fresh Python process (peak RSS, ``ru_maxrss``, is per process and never
goes down), which builds the model (one encoder per modality, VGG16 for ``optical`` and ResNet-50
for ``thermal`` by default, two tasks, pretrained: none), makes random normalised planes of the
size, and segments them with ``engine/predict_segment.py::segment``: the same call ``predict``
makes after reading the files. Variants alternate over ``--reps`` rounds; the report gives the
median peak of each and the ratio against the single window-sized image (target of issue 18:
a 4096² image in 512 windows ≤ 2× a single 512² image), and the same for the memory above the
process's baseline after the model is built (what the image itself costs).

    python bench/inference_memory.py                        # 4096² in 512 windows (minutes)
    python bench/inference_memory.py --quick                # 512² in 128 windows, resnet18s
    python bench/inference_memory.py --whole 2048           # also 2048² through whole
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import common
import numpy as np
import torch

TASKS = {"shapes": 4, "hotspots": 2}
MODALITIES = {"optical": 3, "thermal": 1}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(size: int, window: int | None, overlap: float, encoders: list[str], threads: int):
    """One variant in this process; prints its JSON line."""
    from mmseg_heads.engine.inference import WHOLE_IMAGE, Inference
    from mmseg_heads.engine.predict_segment import segment

    torch.set_num_threads(threads)
    model = common.build_ours(
        dict(zip(MODALITIES, encoders, strict=True)), modalities=MODALITIES, tasks=TASKS
    ).eval()
    rng = np.random.default_rng(0)
    images = {
        m: rng.standard_normal((1, c, size, size), dtype=np.float32) for m, c in MODALITIES.items()
    }
    baseline = peak_mb()
    inference = Inference(window, overlap) if window else WHOLE_IMAGE
    start = time.perf_counter()
    masks = segment(model, images, device=torch.device("cpu"), batch_size=1, inference=inference)
    seconds = time.perf_counter() - start
    assert all(m.shape == (1, size, size) for m in masks.values())
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak_mb(), "seconds": seconds}))


def run_variant(args, size: int, window: int | None) -> dict:
    command = [sys.executable, __file__, "--child", str(size), str(window or 0),
               str(args.overlap), ",".join(args.encoders), str(args.threads)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        size, window, overlap, encoders, threads = sys.argv[2:7]
        child(int(size), int(window) or None, float(overlap), encoders.split(","), int(threads))
        return
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096, help="side of the large image")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--encoders", nargs=2, default=["vgg16", "resnet50"], metavar="NAME")
    p.add_argument("--whole", type=int, default=None, metavar="N", help="also N² whole")
    args = p.parse_args()
    if args.quick:
        args.size, args.window, args.encoders = 512, 128, ["resnet18", "resnet18"]
    common.setup(args, reps=1, warmup=0)
    variants = {
        f"{args.window}² whole": (args.window, None),
        f"{args.size}² in {args.window} windows": (args.size, args.window),
    }
    if args.whole:
        variants[f"{args.whole}² whole"] = (args.whole, None)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.reps):  # alternate: each round runs every variant once
        for name, (size, window) in variants.items():
            runs[name].append(run_variant(args, size, window))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    single, large = list(variants)[:2]
    rows = [
        {
            "variant": name,
            "peak_mb": median(name, "peak_mb"),
            "above_baseline_mb": median(name, "peak_mb") - median(name, "baseline_mb"),
            "seconds": median(name, "seconds"),
        }
        for name in variants
    ]
    ratio = median(large, "peak_mb") / median(single, "peak_mb")
    above = rows[1]["above_baseline_mb"] / max(rows[0]["above_baseline_mb"], 1.0)
    common.report(
        "inference_memory",
        args,
        settings={
            "size": args.size,
            "window": args.window,
            "overlap": args.overlap,
            "encoders": dict(zip(MODALITIES, args.encoders, strict=True)),
            "tasks": TASKS,
        },
        rows=rows,
        ratios={"peak": ratio, "above_baseline": above},
        targets={f"peak {large} / {single}": common.target(ratio, "<=", 2.0)},
        tables=[
            common.table(
                ["variant", "peak RSS (MB)", "above baseline (MB)", "time (s)"],
                [[r["variant"], r["peak_mb"], r["above_baseline_mb"], r["seconds"]] for r in rows],
            )
        ],
        notes=[
            "peak RSS of a fresh process per variant (model built, then one segment call); "
            "baseline = the peak after building the model, before the image"
        ],
    )


if __name__ == "__main__":
    main()
