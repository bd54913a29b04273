"""Step-time cost of adding one head: a shared-decoder head and an own-decoder head.

A representative model: modalities ``optical`` (3 channels) and ``thermal`` (1), one resnet34
encoder each, concat fusion, default decoder channels. The base has one task (``shapes``, 4
classes, shared decoder); a second task (``hotspots``, 2 classes, ce + dice) is added with
``decoder: shared``, ``decoder: own`` (on the fused levels) or ``decoder: own, source: thermal``
(a branch before fusion). The cost is ``step(base + head) / step(base) - 1`` of a full training
step (forward + loss + backward + AdamW).

Targets: shared head ≤ +5 %, own decoder ≤ +30 %.

    python bench/heads.py
    python bench/heads.py --quick
"""

from __future__ import annotations

import common
import torch

MODALITIES = {"optical": 3, "thermal": 1}
BASE = {"shapes": 4}
ADDED = ("hotspots", 2)
VARIANTS = {  # name: head config of the added task (None: the base model)
    "base": None,
    "+shared": {"source": "fused", "decoder": "shared"},
    "+own": {"source": "fused", "decoder": "own"},
    "+own (thermal branch)": {"source": "thermal", "decoder": "own"},
}
TARGETS = {"+shared": 0.05, "+own": 0.30}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="default resnet34 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="default 256 (quick: 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=list(common.PRECISIONS))
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=1)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet34")
    size = args.size or (32 if args.quick else 256)
    all_tasks = BASE | dict([ADDED])
    batch = common.synthetic_batch(
        MODALITIES, all_tasks, batch=args.batch, size=size, device=device
    )
    encoders = {m: encoder for m in MODALITIES}

    models, params = {}, {}
    for name, head in VARIANTS.items():
        tasks = BASE if head is None else all_tasks
        heads = {} if head is None else {ADDED[0]: head}
        torch.manual_seed(0)
        model = common.build_ours(encoders, modalities=MODALITIES, tasks=tasks, heads=heads)
        model = model.to(device)
        criterion = common.multitask_loss(tasks).to(device)
        optimizer = common.trainer_optimizer(model)
        models[name] = (model, criterion, optimizer)
        params[name] = common.count_parameters(model)

    variants = {
        f"{name}/{precision}": common.ours_step(m, c, batch, precision, device, optimizer=o)
        for precision in args.precisions
        for name, (m, c, o) in models.items()
    }
    timings = common.alternate(
        variants, reps=args.reps, warmup=args.warmup, device=device, label="heads"
    )

    rows, ratios, targets, body = [], {}, {}, []
    for precision in args.precisions:
        for name in VARIANTS:
            key = f"{name}/{precision}"
            ratio = timings.ratio(key, f"base/{precision}")
            cost = ratio - 1.0
            if name != "base":
                ratios[key] = ratio
            if name in TARGETS:
                targets[key] = common.target(cost, "<=", TARGETS[name])
            rows.append(
                {
                    "variant": name,
                    "precision": precision,
                    "step_s": timings.median(key),
                    "ratio_to_base": ratio,
                    "added_cost": cost,
                    "params": params[name],
                    "added_params": params[name] - params["base"],
                    "spread": timings.spread(key),
                }
            )
            body.append(
                [
                    name,
                    precision,
                    timings.median(key),
                    "—" if name == "base" else f"{cost:+.1%}",
                    f"≤ +{TARGETS[name]:.0%}" if name in TARGETS else "",
                    "" if name not in TARGETS else cost <= TARGETS[name],
                    f"{(params[name] - params['base']) / 1e6:+.2f}M",
                ]
            )
    common.report(
        "heads",
        args,
        settings={
            "encoders": encoders,
            "size": size,
            "batch": args.batch,
            "modalities": MODALITIES,
            "base_tasks": BASE,
            "added_task": dict([ADDED]),
            "fusion": "concat",
            "decoder_channels": common.model_config(encoders)["decoder_channels"],
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=timings.spreads(),
        tables=[
            common.table(
                ["model", "precision", "s/step", "added step time", "target", "met", "params"],
                body,
            )
        ],
        notes=[
            f"2 × {encoder}, {args.batch}×{size}×{size}; the added task's loss (ce + dice) is part "
            "of its cost",
        ],
    )


if __name__ == "__main__":
    main()
