"""Data loading per augmentation preset vs the rate at which training consumes samples.

The loader is the package's training data path: ``MultiModalDataset`` with ``TrainTransform``
(PNG decode, label mapping, z-score normalisation, resize, foreground-aware crop placement, the
preset's transforms, flips) and ``collate``, in the main process (``workers: 0``: what one worker
process delivers), over the demo's synthetic data written by
``mmseg_heads.data.synthetic.write_demo_dataset`` at 256×256 (``optical`` RGB + ``thermal`` grey;
tasks ``shapes`` 4 classes, ``hotspots`` 2), crop 256, ``crop_foreground: 0.5``. Training is a
bf16 (the CPU default) and an fp32 step of the demo's two modalities with one encoder each
(resnet34), concat fusion, shared-decoder heads, at batch 4, 256².

Per preset: samples/s of one worker, and the ratio ``workers × loader samples/s ÷ training
samples/s`` with the trainer's default ``train.workers: 2`` (target ≥ 3×). Per transform: ms per
sample it adds to a crop with no augmentation (each applied with p = 1, alone). With
``train.augment_on: gpu``: samples/s of one worker that only cuts windows, and the ms per batch
the device then spends augmenting it (``BatchAugment``; on ``--device cuda`` the GPU's).

    python bench/loader.py
    python bench/loader.py --quick
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common
import torch

from mmseg_heads.data.augment import PRESETS, TRANSFORMS, TrainTransform, build_transforms
from mmseg_heads.data.augment.base import GeometricTransform
from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.spec import load_data_spec
from mmseg_heads.data.synthetic import write_demo_dataset
from mmseg_heads.engine.loaders import augment_batch, sample_seed

TARGET = 3.0
TRAINER_WORKERS = 2  # train.workers' default


def to_device(batch: dict, device) -> dict:
    return {
        **batch,
        "images": {k: v.to(device) for k, v in batch["images"].items()},
        "labels": {k: v.to(device) for k, v in batch["labels"].items()},
        "has_label": {k: v.to(device) for k, v in batch["has_label"].items()},
    }


def batch_loader(dataset: MultiModalDataset, batch: int):
    """Returns a function that reads, augments and collates the next batch, on and on."""
    position = iter(range(10**9))

    def load():
        keys = [next(position) for _ in range(batch)]
        return collate([dataset[(k % len(dataset), sample_seed(0, 1, k))] for k in keys])

    return load


def one_transform(dataset: MultiModalDataset, transform: TrainTransform):
    """Returns a function that augments one already-read sample (file reading left out)."""
    sample = dataset.__class__(dataset.spec, dataset.split)[0]
    images, labels = sample["images"], sample["labels"]
    counter = iter(range(10**9))

    def run():
        generator = torch.Generator().manual_seed(next(counter))
        transform(images, labels, sample["has_label"], generator)

    return run


def device_augment(dataset: MultiModalDataset, batch: int, device: torch.device):
    """Returns a function that augments one batch of windows on ``device`` (augment_on: gpu)."""
    windows = to_device(batch_loader(dataset, batch)(), device)
    augment = dataset.transform.batch_augment()
    counter = iter(range(10**9))
    return lambda: augment_batch(windows, augment, next(counter))


def train_settings(size: int, preset: str, on: str = "cpu") -> dict:
    return {
        "crop": size, "hflip": True, "augment": preset, "crop_foreground": 0.5, "augment_on": on
    }  # fmt: skip


def dataset_for(spec, size: int, preset: str, on: str = "cpu") -> MultiModalDataset:
    transform = TrainTransform.from_train_config(train_settings(size, preset, on))
    return MultiModalDataset(spec, "train", transform=transform)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="default resnet34 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="image side and crop (default 256)")
    p.add_argument("--samples", type=int, default=None, help="files written (default 32)")
    p.add_argument("--batch", type=int, default=4)
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
        datasets = {preset: dataset_for(spec, size, preset) for preset in PRESETS}
        on_device = {preset: dataset_for(spec, size, preset, "gpu") for preset in PRESETS}
        modalities = {m.name: m.channels for m in spec.modalities.values()}
        tasks = {t.name: t.num_classes for t in spec.tasks.values()}
        model = common.build_ours(
            {m: encoder for m in modalities}, modalities=modalities, tasks=tasks
        ).to(device)
        criterion = common.multitask_loss(tasks).to(device)
        optimizer = common.trainer_optimizer(model)
        batch = to_device(batch_loader(datasets["none"], args.batch)(), device)
        default = common.default_precision(device)
        precisions = list(dict.fromkeys(["fp32", default]))
        variants = {f"load/{preset}": batch_loader(d, args.batch) for preset, d in datasets.items()}
        for preset, dataset in on_device.items():
            variants[f"windows/{preset}"] = batch_loader(dataset, args.batch)
            variants[f"device/{preset}"] = device_augment(dataset, args.batch, device)
        for precision in precisions:
            variants[f"train/{precision}"] = common.ours_step(
                model, criterion, batch, precision, device, optimizer=optimizer
            )
        timings = common.alternate(
            variants, reps=args.reps, warmup=args.warmup, device=device, label="loader"
        )
        per_transform = {"crop only": one_transform(datasets["none"], TrainTransform(crop=size))}
        for name in TRANSFORMS.names():
            (transform,) = build_transforms([{name: {"p": 1.0}}])
            kind = "geometric" if isinstance(transform, GeometricTransform) else "intensity"
            per_transform[name] = one_transform(
                datasets["none"],
                TrainTransform(crop=size, **{kind: [transform]}),
            )
        transform_timings = common.alternate(
            per_transform, reps=max(3, args.reps), warmup=1, device=torch.device("cpu"),
            label="transforms",
        )  # fmt: skip

    rows, ratios, targets, preset_body = [], {}, {}, []
    for preset in PRESETS:
        load_rate = args.batch / timings.median(f"load/{preset}")
        row = {"preset": preset, "load_samples_per_s": load_rate}
        cells = [preset, load_rate]
        for precision in precisions:
            train_rate = args.batch / timings.median(f"train/{precision}")
            ratio = TRAINER_WORKERS * timings.ratio(f"train/{precision}", f"load/{preset}")
            ratios[f"loader_vs_train/{preset}/{precision}"] = ratio
            row[f"train_samples_per_s/{precision}"] = train_rate
            cells += [train_rate, ratio]
        key = f"loader_vs_train/{preset}/{default}"
        targets[key] = common.target(ratios[key], ">=", TARGET)
        ratios.setdefault("loader_vs_train/fp32", ratios[f"loader_vs_train/{preset}/fp32"])
        rows.append(row)
        preset_body.append([*cells, ratios[key] >= TARGET])
    step = timings.median(f"train/{default}")
    device_body = []
    for preset in PRESETS:
        window_rate = args.batch / timings.median(f"windows/{preset}")
        augment_ms = timings.median(f"device/{preset}") * 1000
        ratios[f"windows_vs_load/{preset}"] = timings.ratio(f"load/{preset}", f"windows/{preset}")
        ratios[f"device_augment_share/{preset}"] = timings.median(f"device/{preset}") / step
        side = on_device[preset].transform.window_side()
        rows.append({"preset": preset, "augment_on": "gpu", "window": side,
                     "window_samples_per_s": window_rate, "device_ms_per_batch": augment_ms})  # fmt: skip
        device_body.append([
            preset, side, window_rate, ratios[f"windows_vs_load/{preset}"], augment_ms,
            100 * ratios[f"device_augment_share/{preset}"],
        ])  # fmt: skip
    base = transform_timings.median("crop only")
    transform_body = [["crop only (no transform)", base * 1000, "—"]]
    for name in TRANSFORMS.names():
        added = transform_timings.median(name) - base
        transform_body.append([name, transform_timings.median(name) * 1000, added * 1000])
        rows.append({"transform": name, "ms_per_sample": transform_timings.median(name) * 1000})
    headers = ["preset", "loader samples/s (1 worker)"]
    for precision in precisions:
        headers += [
            f"training samples/s ({precision})",
            f"{TRAINER_WORKERS} workers / training ({precision})",
        ]
    headers.append(f"≥ {TARGET:g}× ({default})")
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
            "crop_foreground": 0.5,
            "trainer_workers": TRAINER_WORKERS,
            "loader": "MultiModalDataset + TrainTransform + collate, timed in one process",
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=timings.spreads() | transform_timings.spreads(),
        tables=[
            common.table(headers, preset_body),
            common.table(
                ["transform (p = 1, alone)", "ms per sample", "ms added to the crop"],
                transform_body,
            ),
            common.table(
                [
                    "augment_on: gpu, preset",
                    "window side",
                    "loader samples/s (1 worker)",
                    "× the loader with augment_on: cpu",
                    f"{device.type} ms per batch",
                    f"% of a {default} step",
                ],
                device_body,
            ),  # fmt: skip
        ],
        notes=[
            f"batch {args.batch}×{size}×{size}, 2 × {encoder}; one worker is timed in the main "
            f"process; the ratio assumes the trainer's {TRAINER_WORKERS} workers each deliver "
            "that rate (on a 2-core machine they share the cores with training, so the real "
            "margin is smaller: the ratio says whether the pipeline can keep up, not a wall time)",
        ],
    )


if __name__ == "__main__":
    main()
