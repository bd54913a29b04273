"""Data loading alone vs the rate at which training consumes samples.

The loader is the package's training data path: ``MultiModalDataset`` with ``TrainTransform`` (PNG
decode, label mapping, z-score normalisation, random crop, flip) and ``collate`` in a shuffling
``DataLoader``, in the main process (``workers: 0``: what one worker process delivers), over the
demo's synthetic data written by ``mmseg_heads.data.synthetic.write_demo_dataset`` at 256×256
(``optical`` RGB + ``thermal`` grey; tasks ``shapes`` 4 classes, ``hotspots`` 2). Training is a
step of the demo's two modalities with one encoder each (resnet34, the heads benchmark's model),
concat fusion, shared-decoder heads, on the batches that loader delivers.

Ratio: loader samples/s ÷ training samples/s (= step time ÷ time to load one batch). Target ≥ 3×.

    python bench/loader.py
    python bench/loader.py --quick
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common
import torch
from torch.utils.data import DataLoader

from mmseg_heads.data.augment import TrainTransform
from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.spec import load_data_spec
from mmseg_heads.data.synthetic import write_demo_dataset

TARGET = 3.0


def to_device(batch: dict, device) -> dict:
    return {
        **batch,
        "images": {k: v.to(device) for k, v in batch["images"].items()},
        "labels": {k: v.to(device) for k, v in batch["labels"].items()},
        "has_label": {k: v.to(device) for k, v in batch["has_label"].items()},
    }


def endless(loader):
    while True:
        yield from loader


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="default resnet34 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="image side (default 256, quick 64)")
    p.add_argument("--samples", type=int, default=None, help="files written (default 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--data", type=Path, default=None, help="reuse/keep the data here")
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=2)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet34")
    size = args.size or (64 if args.quick else 256)
    samples = args.samples or (4 if args.quick else 32)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "demo"
        spec_path = root / "demo.yaml"
        if not spec_path.is_file():
            write_demo_dataset(root, train=samples, val=1, size=size, seed=0)
        spec = load_data_spec(spec_path)
        dataset = MultiModalDataset(
            spec, "train", transform=TrainTransform.from_train_config({"crop": size, "hflip": True})
        )
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            num_workers=0,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(0),
        )
        batches = endless(loader)
        modalities = {m.name: m.channels for m in spec.modalities.values()}
        tasks = {t.name: t.num_classes for t in spec.tasks.values()}
        model = common.build_ours(
            {m: encoder for m in modalities}, modalities=modalities, tasks=tasks
        ).to(device)
        criterion = common.multitask_loss(tasks).to(device)
        optimizer = common.trainer_optimizer(model)
        batch = to_device(next(batches), device)  # one batch for the steps, like the trainer
        default = common.default_precision(device)
        precisions = list(dict.fromkeys(["fp32", default]))
        variants = {"load": lambda: next(batches)}
        for precision in precisions:
            variants[f"train/{precision}"] = common.ours_step(
                model, criterion, batch, precision, device, optimizer=optimizer
            )
        timings = common.alternate(
            variants, reps=args.reps, warmup=args.warmup, device=device, label="loader"
        )

    load_rate = args.batch / timings.median("load")
    rows, ratios, targets, body = [], {}, {}, []
    for precision in precisions:
        key = f"train/{precision}"
        ratio = timings.ratio(key, "load")
        ratios[f"loader_vs_train/{precision}"] = ratio
        targets[f"loader_vs_train/{precision}"] = common.target(ratio, ">=", TARGET)
        train_rate = args.batch / timings.median(key)
        rows.append(
            {
                "precision": precision,
                "load_samples_per_s": load_rate,
                "train_samples_per_s": train_rate,
                "ratio": ratio,
            }
        )
        body.append(
            [
                precision + (" (default here)" if precision == default else ""),
                load_rate,
                train_rate,
                ratio,
                ratio >= TARGET,
            ]
        )
    common.report(
        "loader",
        args,
        settings={
            "size": size,
            "batch": args.batch,
            "files": samples,
            "modalities": modalities,
            "tasks": tasks,
            "encoders": {m: encoder for m in modalities},
            "loader": "MultiModalDataset + TrainTransform + collate, DataLoader workers 0",
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=timings.spreads(),
        tables=[
            common.table(
                [
                    "training precision",
                    "loader samples/s (1 process)",
                    "training samples/s",
                    "loader / training",
                    f"≥ {TARGET:g}×",
                ],
                body,
            )
        ],
        notes=[
            f"{args.batch}×{size}×{size}, 2 × {encoder}; the loader runs in the main process "
            "(what one worker gives); with `workers: N` on a machine with spare cores it scales "
            "roughly with N, on this one the workers take cores from training",
        ],
    )


if __name__ == "__main__":
    main()
