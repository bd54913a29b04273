"""One fusion trunk with three heads vs three separate U-Nets, one per task: a training step.

Our model: modalities C0, LGE, T2 (1 channel each), tasks anatomy (4 classes), scar (2), edema (2),
concat fusion, shared-decoder heads, ``TaskLoss`` ce + dice per task combined by
``MultiTaskLoss``. The usual way: one ``smp.Unet(encoder, encoder_weights=None, in_channels=3)``
per task, each reading the three modalities stacked as its 3 input channels, each with the same
ce + dice ``TaskLoss`` and its own AdamW. A step is forward + loss + backward + AdamW step.

Target: our step ≤ 0.5× the summed steps of the three U-Nets, at equal precision.

    python bench/trunk.py                 # numbers (a few minutes on 2 cores)
    python bench/trunk.py --quick         # smoke run, seconds
"""

from __future__ import annotations

import statistics

import common
import segmentation_models_pytorch as smp
import torch

MODALITIES = {"C0": 1, "LGE": 1, "T2": 1}
TASKS = {"anatomy": 4, "scar": 2, "edema": 2}
TARGET = 0.5


def trunk_settings(encoder: str) -> dict[str, dict]:
    return {
        "per-modality": {m: encoder for m in MODALITIES},
        "shared": {"shared": encoder},
        "early": {"+".join(MODALITIES): encoder},
    }


def unet_steps(encoder: str, classes: int, stacked, labels, device):
    """An ``smp.Unet`` for one task and ``make(precision)`` giving its training step."""
    unet = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=classes).to(device)
    unet.train()
    loss = common.task_loss().to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-4)

    def make(precision: str):
        return common.training_step(
            lambda: unet(stacked),
            lambda logits: loss(logits.float(), labels)[0],
            optimizer,
            precision,
            device,
        )

    return unet, make


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="default resnet50 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="default 256 (quick: 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=list(common.PRECISIONS))
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=1)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet50")
    size = args.size or (32 if args.quick else 256)
    batch = common.synthetic_batch(MODALITIES, TASKS, batch=args.batch, size=size, device=device)

    ours, params = {}, {}
    for name, encoders in trunk_settings(encoder).items():
        model = common.build_ours(encoders, modalities=MODALITIES, tasks=TASKS).to(device)
        criterion = common.multitask_loss(TASKS).to(device)
        optimizer = common.trainer_optimizer(model)
        params[name] = common.count_parameters(model)
        ours[name] = (model, criterion, optimizer)
    unets = {}
    stacked = torch.cat([batch["images"][m] for m in MODALITIES], dim=1)
    for task, classes in TASKS.items():
        unet, make = unet_steps(encoder, classes, stacked, batch["labels"][task], device)
        unets[task] = make
        params[f"unet-{task}"] = common.count_parameters(unet)

    variants = {}
    for precision in args.precisions:
        for name, (model, criterion, optimizer) in ours.items():
            variants[f"{name}/{precision}"] = common.ours_step(
                model, criterion, batch, precision, device, optimizer=optimizer
            )
        for task, make in unets.items():
            variants[f"unet-{task}/{precision}"] = make(precision)
    timings = common.alternate(
        variants, reps=args.reps, warmup=args.warmup, device=device, label="trunk"
    )

    rows, ratios, targets = [], {}, {}
    for precision in args.precisions:
        unet_names = [f"unet-{t}/{precision}" for t in TASKS]
        unet_total = statistics.median(timings.total(unet_names))
        for name in ours:
            key = f"{name}/{precision}"
            ratio = timings.ratio(key, unet_names)
            ratios[key] = ratio
            targets[key] = common.target(ratio, "<=", TARGET)
            rows.append(
                {
                    "trunk": name,
                    "encoders": trunk_settings(encoder)[name],
                    "precision": precision,
                    "ours_s": timings.median(key),
                    "three_unets_s": unet_total,
                    "ratio": ratio,
                    "params": params[name],
                    "spread": timings.spread(key),
                }
            )
    unet_params = sum(params[f"unet-{t}"] for t in TASKS)
    headers = [
        "trunk (encoders)",
        "precision",
        "ours s/step",
        "3 U-Nets s/step",
        "ours / 3 U-Nets",
        f"≤ {TARGET}",
        "params ours / U-Nets",
    ]
    body = [
        [
            f"{r['trunk']} `{r['encoders']}`",
            r["precision"],
            r["ours_s"],
            r["three_unets_s"],
            r["ratio"],
            r["ratio"] <= TARGET,
            f"{r['params'] / 1e6:.1f}M / {unet_params / 1e6:.1f}M",
        ]
        for r in rows
    ]
    if len(args.precisions) > 1:
        # bf16 vs fp32 of the same variant: does autocast pay on this device?
        first, *rest = args.precisions
        for other in rest:
            for name in [*ours, *(f"unet-{t}" for t in TASKS)]:
                ratios[f"{name}/{other}_vs_{first}"] = timings.ratio(
                    f"{name}/{other}", f"{name}/{first}"
                )
    precision_rows = [
        [name.split("/")[0], name.split("/")[1].replace("_vs_", " / "), value]
        for name, value in ratios.items()
        if "_vs_" in name
    ]
    common.report(
        "trunk",
        args,
        settings={
            "encoder": encoder,
            "size": size,
            "batch": args.batch,
            "modalities": MODALITIES,
            "tasks": TASKS,
            "fusion": "concat",
            "heads": "shared decoder, no gate",
            "loss": "ce + dice per task",
            "optimizer": "AdamW",
            "default_precision": common.default_precision(device),
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=timings.spreads(),
        tables=[
            common.table(headers, body),
            common.table(["variant", "precision ratio", "step time ratio"], precision_rows),
        ],
        notes=[
            f"{encoder}, {args.batch}×{size}×{size}; each U-Net reads the 3 modalities stacked "
            "as 3 channels; ratios are medians of per-round ratios",
        ],
    )


if __name__ == "__main__":
    main()
