"""How the training step grows with the number of modalities (1–4), of tasks (1–4) and image size.

Fixed size and model family: one encoder per modality (resnet34; 1-channel modalities), concat
fusion, default decoder channels, ce + dice per task (3 classes each), batch 2, 256×256. Three
sweeps against the same 1-modality 1-task model, all timed in the same rounds:

- modalities 1–4, one task (shared decoder);
- tasks 1–4 on the shared decoder, one modality;
- tasks 1–4, the added tasks with a decoder of their own (``decoder: own``), one modality;
- image size 128–512 (``--sizes``), one modality, one task.

    python bench/scaling.py
    python bench/scaling.py --quick
"""

from __future__ import annotations

import common
import torch

COUNTS = (1, 2, 3, 4)
SIZES = (128, 256, 384, 512)
CLASSES = 3


def variant(modalities: int, tasks: int, own: bool) -> tuple[dict, dict, dict]:
    mods = {f"M{i + 1}": 1 for i in range(modalities)}
    task_classes = {f"T{i + 1}": CLASSES for i in range(tasks)}
    heads = {t: {"decoder": "own"} for t in list(task_classes)[1:]} if own else {}
    return mods, task_classes, heads


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="default resnet34 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="default 256 (quick: 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--precision", choices=common.PRECISIONS, default="fp32")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="default 128 256 384 512")
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=1)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet34")
    size = args.size or (32 if args.quick else 256)
    counts = (1, 2) if args.quick else COUNTS
    sizes = args.sizes or ((32, 64) if args.quick else SIZES)

    configs = {}  # name -> (modalities, tasks, own)
    for n in counts:
        configs[f"modalities={n}"] = (n, 1, False)
        configs[f"tasks={n}"] = (1, n, False)
        configs[f"own tasks={n}"] = (1, n, True)
    configs = {k: v for k, v in configs.items() if k not in ("tasks=1", "own tasks=1")}
    side = {name: size for name in configs}
    for s in sizes:
        if s != size:
            configs[f"size={s}"], side[f"size={s}"] = (1, 1, False), s
    variants, params = {}, {}
    for name, (m, t, own) in configs.items():
        mods, tasks, heads = variant(m, t, own)
        torch.manual_seed(0)
        model = common.build_ours(
            {k: encoder for k in mods}, modalities=mods, tasks=tasks, heads=heads
        ).to(device)
        batch = common.synthetic_batch(
            mods, tasks, batch=args.batch, size=side[name], device=device
        )
        criterion = common.multitask_loss(tasks).to(device)
        variants[name] = common.ours_step(model, criterion, batch, args.precision, device)
        params[name] = common.count_parameters(model)
    timings = common.alternate(
        variants, reps=args.reps, warmup=args.warmup, device=device, label="scaling"
    )

    base = "modalities=1"
    ratios, rows, body = {}, [], []
    for n in counts:
        row = [n]
        for sweep in ("modalities", "tasks", "own tasks"):
            name = base if n == 1 else f"{sweep}={n}"
            ratio = timings.ratio(name, base)
            ratios[f"{sweep}={n}"] = ratio
            rows.append(
                {
                    "sweep": sweep,
                    "count": n,
                    "step_s": timings.median(name),
                    "ratio_to_1x1": ratio,
                    "params": params[name],
                }
            )
            row.append(f"{ratio:.2f}× ({timings.median(name):.3g} s)")
        body.append(row)
    size_body = []
    for s in sorted({*sizes, size}):
        name = base if s == size else f"size={s}"
        ratio = timings.ratio(name, base)
        per_pixel = ratio / (s / size) ** 2
        ratios[f"size={s}"] = ratio
        rows.append(
            {"sweep": "size", "count": s, "step_s": timings.median(name), "ratio_to_1x1": ratio,
             "per_pixel_ratio": per_pixel, "params": params[name]}
        )  # fmt: skip
        size_body.append([f"{s}²", f"{ratio:.2f}× ({timings.median(name):.3g} s)", per_pixel])
    common.report(
        "scaling",
        args,
        settings={
            "encoder": encoder,
            "size": size,
            "batch": args.batch,
            "precision": args.precision,
            "classes_per_task": CLASSES,
            "fusion": "concat",
        },
        rows=rows,
        ratios=ratios,
        targets={},
        noise=timings.spreads(),
        tables=[
            common.table(
                [
                    "n",
                    "n modalities, 1 task",
                    "1 modality, n tasks (shared decoder)",
                    "1 modality, n tasks (own decoders)",
                ],
                body,
            ),
            common.table(
                ["image size", f"step time vs {size}²", f"per pixel vs {size}²"], size_body
            ),
        ],
        notes=[
            f"step time relative to 1 modality, 1 task ({encoder}, {args.batch}×{size}×{size}, "
            f"{args.precision}); in brackets the median step time"
        ],
    )


if __name__ == "__main__":
    main()
