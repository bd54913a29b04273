"""Real data: our one-trunk three-task model vs the usual alternatives on MyoPS 2020, same budget.

Train on Case3001–3020, evaluate on Case3021–3025 (``data_specs/myops2020.yaml``), tasks anatomy
(on C0), scar (on LGE), edema (on T2). Every model trains for the same budget of CPU time on this
CPU, in bf16 autocast, with CE + Dice per task, AdamW, cosine LR over the budget, random 256² crops:

- ``ours_*``: one ``MultiTaskSegmenter`` (one trunk, three heads) — several trunk settings;
- ``separate_own``: three ``smp.Unet("resnet50")``, one per task on its own sequence (3 budgets);
- ``separate_stacked``: the same with all three sequences stacked as input (3 budgets);
- ``joint_unet``: ONE ``smp.Unet("resnet50")`` fed the stacked sequences, one output group per task.

Prints foreground Dice per task (macro over foreground classes for anatomy), the optimizer steps
each model managed and its wall time; writes JSON and, with ``--results``, ``docs/results.md``.

    python bench/realdata.py --budget-minutes 8 --results docs/results.md
Needs ../shared/data/myops2020 (not redistributed; cite Zhuang et al., MedIA 2023; Zhuang, TPAMI 2019).

``--dataset brats``: BraTS 2018 (``data_specs/brats2018.yaml``), tasks ``whole_tumor`` (on FLAIR),
``enhancing`` (on T1ce) and the fused ``regions`` map (core, edema, enhancing: scored as the mean
over the three), the four sequences stacked as FLAIR, T1, T1ce, T2 for the stacked baselines. The
shared copy holds 5 subjects; the split is the spec's own: train on the four subjects matching
``2013|TCIA`` (Brats18_2013_11_1, _2013_3_1, _TCIA01_378_1, _TCIA10_628_1), validate on the one
subject Brats18_CBICA_ABM_1 (its 58 axial slices with tumour plus 2 on each side) — one validation
subject, so every BraTS score is noisy. Default crop 192² (slices are 240²). Variants:
``ours_branches`` (``configs/brats_branches.yaml``: one ResNet-18 per sequence, attention fusion)
and ``ours_early_r34`` (the MyoPS recipe: the four sequences stacked into one ResNet-34 trunk);
every model trains with CE + Dice on every task (the config's focal loss on enhancing is not used).
Its step log is ``bench/results/realdata_brats_steps.jsonl``; ``separate_own`` trains ``regions``
on all four sequences (it has no single one). ``--results`` is MyoPS-only.

    python bench/realdata.py --dataset brats --steps 480 --models ours_early_r34 --threads 1 \
        --pipeline ours --augment light --crop-foreground 0.8
Needs ../shared/data/brats2018 (not redistributed; cite Menze et al., IEEE TMI 2015; Bakas et al.,
Sci. Data 2017; Bakas et al., arXiv:1811.02629).

``--val-cases ID …`` (with ``--steps``, either data set) validates on those cases and trains on
every other case instead of the spec's split: leave-cases-out folds, so that a score is not one
subject's. ``--summarize`` then adds a table of the mean over folds (seed 0 of each fold).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import segmentation_models_pytorch as smp  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from mmseg_heads.data.augment import TrainTransform  # noqa: E402
from mmseg_heads.data.augment.pipeline import cut  # noqa: E402
from mmseg_heads.data.dataset import MultiModalDataset, collate  # noqa: E402
from mmseg_heads.data.spec import IGNORE_INDEX, load_data_spec  # noqa: E402
from mmseg_heads.engine.loaders import train_loader  # noqa: E402
from mmseg_heads.losses.multitask import MultiTaskLoss  # noqa: E402
from mmseg_heads.losses.task_loss import TaskLoss  # noqa: E402
from mmseg_heads.metrics.confusion import ConfusionMatrix  # noqa: E402
from mmseg_heads.models.build import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "data_specs" / "myops2020.yaml"
SEQUENCE_OF = {"anatomy": "C0", "scar": "LGE", "edema": "T2"}
ORDER = ("C0", "LGE", "T2")

OURS = {
    # one encoder per sequence, attention fusion per stride, gated heads (configs/myops_branches.yaml)
    "ours_branches": {
        "encoders": {"C0": "resnet34", "LGE": "resnet34", "T2": "resnet34"},
        "fusion": "attention",
        "modality_dropout": 0.2,
        "heads": {
            "anatomy": {"source": "fused", "decoder": "shared", "gate": "attention"},
            "scar": {"source": "fused", "decoder": "own", "gate": "attention"},
            "edema": {"source": "fused", "decoder": "own", "gate": "attention"},
        },
    },
    # the three sequences stacked into one ResNet50 (early fusion), gated heads
    "ours_early_gated": {
        "encoders": {"C0+LGE+T2": "resnet50"},
        "fusion": "concat",
        "modality_dropout": 0.0,
        "heads": {
            "anatomy": {"source": "fused", "decoder": "shared", "gate": "none"},
            "scar": {"source": "fused", "decoder": "shared", "gate": "attention"},
            "edema": {"source": "fused", "decoder": "shared", "gate": "attention"},
        },
    },
}

# the same with a ResNet34 trunk: cheaper steps, so more of them in the same budget
OURS["ours_early_r34"] = OURS["ours_early_gated"] | {"encoders": {"C0+LGE+T2": "resnet34"}}
# and without the attention gates: every head a classifier on the shared decoder
OURS["ours_early_r34_nogate"] = OURS["ours_early_r34"] | {
    "heads": {t: {"source": "fused", "decoder": "shared", "gate": "none"} for t in SEQUENCE_OF}
}
# the ResNet-50 trunk without gates: joint_unet's network, built by our trunk and heads
OURS["ours_early_r50_nogate"] = OURS["ours_early_r34_nogate"] | {
    "encoders": {"C0+LGE+T2": "resnet50"}
}

BRATS_OURS = {
    # configs/brats_branches.yaml: one ResNet-18 per sequence, attention fusion, gated heads
    "ours_branches": {
        "encoders": {"flair": "resnet18", "t1": "resnet18", "t1ce": "resnet18", "t2": "resnet18"},
        "fusion": "attention",
        "modality_dropout": 0.2,
        "heads": {
            "whole_tumor": {"source": "fused", "decoder": "own", "gate": "attention"},
            "enhancing": {"source": "fused", "decoder": "own", "gate": "attention"},
            "regions": {"source": "fused", "decoder": "shared", "gate": "attention"},
        },
    },
    # configs/brats_early.yaml, the MyoPS recipe (configs/myops_early.yaml) on the four sequences
    # stacked into one ResNet-34, one shared decoder, gates on the two single-sequence heads, none
    # on the fused map
    "ours_early_r34": {
        "encoders": {"flair+t1+t1ce+t2": "resnet34"},
        "fusion": "concat",
        "modality_dropout": 0.0,
        "heads": {
            "whole_tumor": {"source": "fused", "decoder": "shared", "gate": "attention"},
            "enhancing": {"source": "fused", "decoder": "shared", "gate": "attention"},
            "regions": {"source": "fused", "decoder": "shared", "gate": "none"},
        },
    },
}


@dataclass(frozen=True)
class Dataset:
    """What differs between the benchmark's data sets: spec, tasks, input order, our variants."""

    name: str
    spec: Path
    data: Path
    sequence_of: dict[str, tuple[str, ...]]  # per task, the sequences ``separate_own`` sees
    order: tuple[str, ...]  # the stacked input of the U-Net baselines
    ours: dict[str, dict]
    crop: int
    log: Path
    json: Path
    val_note: str  # what the scores are over, for the Markdown table


DATASETS = {
    "myops": Dataset(
        "myops",
        SPEC,
        ROOT.parent / "shared" / "data" / "myops2020",
        {t: (m,) for t, m in SEQUENCE_OF.items()},
        ORDER,
        OURS,
        256,
        ROOT / "bench" / "results" / "realdata_steps.jsonl",
        ROOT / "bench" / "results" / "realdata.json",
        "Foreground Dice on Case3021–3025 (19 slices); "
        "anatomy is the mean over myocardium, LV and RV blood.",
    ),
    "brats": Dataset(
        "brats",
        ROOT / "data_specs" / "brats2018.yaml",
        ROOT.parent / "shared" / "data" / "brats2018",
        {
            "whole_tumor": ("flair",),
            "enhancing": ("t1ce",),
            "regions": ("flair", "t1", "t1ce", "t2"),
        },
        ("flair", "t1", "t1ce", "t2"),
        BRATS_OURS,
        192,
        ROOT / "bench" / "results" / "realdata_brats_steps.jsonl",
        ROOT / "bench" / "results" / "realdata_brats.json",
        "Foreground Dice on ONE subject, Brats18_CBICA_ABM_1 (58 slices: those with tumour "
        "plus 2 on each side); regions is the mean over core, edema and enhancing.",
    ),
}


class CentreCrop:
    """The plain pipeline of the issue's baseline: a fixed centre crop shifted by up to ``shift``
    px, and flips (what a hand-written MyoPS U-Net does; the heart sits near the image centre)."""

    def __init__(self, crop: int, shift: int = 16):
        self.crop, self.shift = crop, shift
        self.flips = TrainTransform.from_train_config({"crop": crop, "hflip": True, "vflip": True})

    def __call__(self, images, labels, has_label, generator):
        height, width = next(iter(images.values())).shape[-2:]
        dy, dx = (
            int(torch.randint(-self.shift, self.shift + 1, (), generator=generator)) for _ in "yx"
        )
        top, left = (height - self.crop) // 2 + dy, (width - self.crop) // 2 + dx
        images = {k: cut(v, top, left, self.crop, 0.0) for k, v in images.items()}
        labels = {k: cut(v, top, left, self.crop, IGNORE_INDEX) for k, v in labels.items()}
        return self.flips(images, labels, has_label, generator)


#: ``--pipeline`` choices: the issue's plain baseline pipeline, or ours with these train options
PIPELINES = ("plain", "ours")


def train_settings(args) -> dict:
    """The ``train`` options of our pipeline, as a config would give them."""
    return {
        "crop": args.crop,
        "hflip": True,
        "vflip": True,
        "augment": args.augment,
        "crop_foreground": args.crop_foreground,
        "seed": args.seed,
        "workers": args.workers,
    }


def train_data(spec, pipeline: str, args) -> MultiModalDataset:
    if pipeline == "plain":
        return MultiModalDataset(spec, "train", transform=CentreCrop(args.crop))
    return MultiModalDataset(
        spec, "train", transform=TrainTransform.from_train_config(train_settings(args))
    )


def epochs_of_batches(dataset, args):
    """Batches of 4 for ever, epoch after epoch, in the trainer's seeded order (the same for every
    model of a run: the order and crops depend on the seed and the epoch only)."""
    epoch = 1
    while True:
        yield from train_loader(dataset, train_settings(args), 4, epoch)
        epoch += 1


def loaders(spec, crop: int) -> tuple[DataLoader, DataLoader]:
    train = MultiModalDataset(
        spec,
        "train",
        transform=TrainTransform.from_train_config({"crop": crop, "hflip": True, "vflip": True}),
    )
    val = MultiModalDataset(spec, "val")
    generator = torch.Generator().manual_seed(0)
    return (
        DataLoader(
            train,
            batch_size=4,
            shuffle=True,
            drop_last=True,
            collate_fn=collate,
            generator=generator,
        ),
        DataLoader(val, batch_size=2, shuffle=False, collate_fn=collate),
    )


def stacked(images: dict[str, torch.Tensor], order: tuple[str, ...] = ORDER) -> torch.Tensor:
    return torch.cat([images[m] for m in order], dim=1)


class JointUnet(nn.Module):
    """One smp Unet with one output group per task (the strongest simple baseline)."""

    def __init__(self, tasks: dict[str, int], order: tuple[str, ...] = ORDER):
        super().__init__()
        self.tasks, self.order = tasks, order
        self.unet = smp.Unet(
            "resnet50", encoder_weights=None, in_channels=len(order), classes=sum(tasks.values())
        )

    def forward(self, images):
        out = self.unet(stacked(images, self.order))
        return dict(zip(self.tasks, out.split(list(self.tasks.values()), dim=1), strict=True))


class SingleUnet(nn.Module):
    def __init__(
        self, task: str, classes: int, own_sequence: bool, dataset: Dataset = DATASETS["myops"]
    ):
        super().__init__()
        self.task, self.own = task, own_sequence
        self.inputs = dataset.sequence_of[task] if own_sequence else dataset.order
        self.unet = smp.Unet(
            "resnet50", encoder_weights=None, in_channels=len(self.inputs), classes=classes
        )

    def forward(self, images):
        return {self.task: self.unet(stacked(images, self.inputs))}


def criterion(tasks: list[str]) -> MultiTaskLoss:
    terms = {"ce": {"weight": 1.0}, "dice": {"weight": 1.0}}
    return MultiTaskLoss({t: TaskLoss(terms, ignore_index=IGNORE_INDEX) for t in tasks})


def step(model: nn.Module, loss_fn, optimizer, batch: dict, lr: float) -> None:
    """One bf16 training step at learning rate ``lr`` (every model of the benchmark takes these)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch["images"])
    loss, _ = loss_fn(
        {k: v.float() for k, v in logits.items()},
        {t: batch["labels"][t] for t in loss_fn.task_losses},
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def train_for(
    model: nn.Module, tasks: list[str], loader: DataLoader, budget_s: float, lr: float
) -> dict:
    """Train until the budget of CPU time is spent; LR follows a cosine over the spent fraction.

    The budget is this process's CPU time (all its threads, data loading included), not wall
    time: other work on a shared machine then slows the run down but does not shrink any model's
    share, so every model gets the same compute whatever else the machine was doing.
    """
    loss_fn = criterion(tasks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    started, wall_started, steps = time.process_time(), time.perf_counter(), 0
    while True:
        for batch in loader:
            elapsed = time.process_time() - started
            if elapsed >= budget_s:
                return {
                    "steps": steps,
                    "seconds": elapsed,
                    "wall_seconds": time.perf_counter() - wall_started,
                }
            step(
                model,
                loss_fn,
                optimizer,
                batch,
                lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget_s)),
            )
            steps += 1


def train_steps(model: nn.Module, tasks: list[str], batches, steps: int, lr: float) -> dict:
    """``steps`` optimizer steps of batch 4, cosine LR over them; the same recipe as train_for."""
    loss_fn = criterion(tasks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    started, wall_started = time.process_time(), time.perf_counter()
    for index in range(steps):
        step(
            model,
            loss_fn,
            optimizer,
            next(batches),
            lr * 0.5 * (1 + math.cos(math.pi * index / steps)),
        )
    return {
        "steps": steps,
        "seconds": time.process_time() - started,
        "wall_seconds": time.perf_counter() - wall_started,
    }


@torch.inference_mode()
def dice_scores(
    model: nn.Module, tasks: dict[str, list[str]], loader: DataLoader
) -> dict[str, float]:
    model.eval()
    matrices = {t: ConfusionMatrix(classes, IGNORE_INDEX) for t, classes in tasks.items()}
    for batch in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch["images"])
        for task, matrix in matrices.items():
            matrix.update(logits[task].argmax(1), batch["labels"][task])
    out = {}
    for task, matrix in matrices.items():
        per_class = matrix.summary()["per_class"]
        values = [v["dice"] for c, v in list(per_class.items())[1:] if v["dice"] is not None]
        out[task] = sum(values) / len(values) if values else 0.0
    return out


def run_variant(
    name: str,
    build: Callable[[], nn.Module],
    tasks: list[str],
    spec,
    train_loader,
    val_loader,
    budget_s,
    lr,
    seed: int = 0,
):
    # Every model starts from the same seed and sees the same order of batches and crops.
    torch.manual_seed(seed)
    train_loader.generator.manual_seed(seed)
    model = build()
    info = train_for(model, tasks, train_loader, budget_s, lr)
    dice = dice_scores(model, {t: list(spec.tasks[t].classes) for t in tasks}, val_loader)
    print(
        f"  {name:<28} steps {info['steps']:>5}  {info['seconds']:>6.0f} CPU s "
        f"{info['wall_seconds']:>6.0f} s wall  "
        + "  ".join(f"{t} {d:.3f}" for t, d in dice.items()),
        flush=True,
    )
    return {"dice": dice, **info}


#: The alternatives, trained after ours: one joint U-Net, three separate U-Nets two ways.
BASELINES = ("joint_unet", "separate_own", "separate_stacked")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=8.0,
        help="training budget per model: minutes on all --threads (CPU time = minutes × threads)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: a few seconds per model")
    p.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default="myops",
        help="MyoPS 2020 (default) or BraTS 2018 (train 4 subjects, validate on 1)",
    )
    p.add_argument("--crop", type=int, default=None, help="default 256 (MyoPS), 192 (BraTS)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="weights, batch order and crops")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="default bench/results/realdata.json (MyoPS), realdata_brats.json (BraTS)",
    )
    p.add_argument(
        "--results", type=Path, default=None, help="write this Markdown table (docs/results.md)"
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=sorted({*OURS, *BRATS_OURS, *BASELINES}),
        default=None,
        help="train only these (default: all of the dataset's)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="budget in optimizer steps of batch 4 instead of CPU time (the issue-16 protocol); "
        "appends one line per model to --log",
    )
    p.add_argument("--pipeline", choices=PIPELINES, default="ours", help="with --steps")
    p.add_argument("--augment", default="none", help="with --pipeline ours: train.augment")
    p.add_argument("--crop-foreground", type=float, default=0.0, help="train.crop_foreground")
    p.add_argument("--workers", type=int, default=0, help="loader processes (with --steps)")
    p.add_argument(
        "--val-cases",
        nargs="+",
        default=None,
        help="with --steps: validate on these cases, train on every other case (a fold) instead "
        "of the spec's split",
    )
    p.add_argument(
        "--log",
        type=Path,
        default=None,
        help="default bench/results/realdata_steps.jsonl (MyoPS), realdata_brats_steps.jsonl",
    )
    p.add_argument(
        "--summarize", action="store_true", help="print means and spreads of --log and exit"
    )
    args = p.parse_args()
    dataset = DATASETS[args.dataset]
    args.crop = dataset.crop if args.crop is None else args.crop
    args.json = dataset.json if args.json is None else args.json
    args.log = dataset.log if args.log is None else args.log
    if args.models is None:
        args.models = [*dataset.ours, *BASELINES]
    unknown = [m for m in args.models if m not in dataset.ours and m not in BASELINES]
    if unknown:
        p.error(f"--dataset {dataset.name} has no model {unknown}; it has {[*dataset.ours]}")
    if args.results and dataset.name != "myops":
        p.error("--results rewrites the MyoPS page; copy a BraTS table into it by hand")
    if args.summarize:
        print(summarize(args.log, dataset))
        return
    if args.steps is not None:
        run_steps(args, dataset)
        return
    if not dataset.spec.is_file() or not dataset.data.is_dir():
        raise SystemExit(
            f"needs ../shared/data/{dataset.data.name} (see data_specs/{dataset.spec.name})"
        )
    torch.set_num_threads(args.threads)
    budget = (4.0 if args.quick else args.budget_minutes * 60) * args.threads  # CPU seconds
    spec = load_data_spec(dataset.spec)
    train_loader, val_loader = loaders(spec, args.crop)
    task_classes = {t: spec.tasks[t].num_classes for t in dataset.sequence_of}
    modalities = {m: 1 for m in dataset.order}
    results: dict[str, dict] = {}
    print(
        f"budget {budget:.0f} CPU s per model, crop {args.crop}, {args.threads} threads", flush=True
    )
    for name, model_cfg in dataset.ours.items():
        if name not in args.models:
            continue
        cfg = {
            "pretrained": "none",
            "depth": 5,
            "decoder_channels": [256, 128, 64, 32, 16],
        } | model_cfg
        results[name] = run_variant(
            name, lambda cfg=cfg: build_model(cfg, modalities=modalities, tasks=task_classes),
            list(task_classes), spec, train_loader, val_loader, budget, args.lr, args.seed,
        )  # fmt: skip
    if "joint_unet" in args.models:
        results["joint_unet"] = run_variant(
            "joint_unet",
            lambda: JointUnet(task_classes, dataset.order),
            list(task_classes),
            spec,
            train_loader,
            val_loader,
            budget,
            args.lr,
            args.seed,
        )
    for own, label in ((True, "separate_own"), (False, "separate_stacked")):
        if label not in args.models:
            continue
        parts = {}
        for task, classes in task_classes.items():
            parts[task] = run_variant(
                f"{label}[{task}]",
                lambda t=task, c=classes, o=own: SingleUnet(t, c, o, dataset), [task],
                spec, train_loader, val_loader, budget, args.lr, args.seed,
            )  # fmt: skip
        results[label] = {
            "dice": {t: parts[t]["dice"][t] for t in task_classes},
            "steps": {t: parts[t]["steps"] for t in task_classes},
            "seconds": sum(parts[t]["seconds"] for t in task_classes),
            "wall_seconds": sum(parts[t]["wall_seconds"] for t in task_classes),
        }
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": _cpu(),
        "threads": args.threads,
        "torch": torch.__version__,
        "budget_cpu_s_per_model": budget,
        "crop": args.crop,
        "seed": args.seed,
    }
    if dataset.name != "myops":
        meta["dataset"] = dataset.name
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    table = markdown(results, meta, dataset)
    print(table)
    if args.results:
        args.results.write_text(RESULTS_HEAD + table + RESULTS_TAIL)


def build_named(
    name: str, task_classes: dict[str, int], dataset: Dataset = DATASETS["myops"]
) -> nn.Module:
    if name == "joint_unet":
        return JointUnet(task_classes, dataset.order)
    cfg = {"pretrained": "none", "depth": 5, "decoder_channels": [256, 128, 64, 32, 16]}
    return build_model(
        cfg | dataset.ours[name], modalities={m: 1 for m in dataset.order}, tasks=task_classes
    )


def run_steps(args, dataset: Dataset = DATASETS["myops"]) -> None:
    """Each of --models for --steps optimizer steps on one pipeline and seed; one log line each."""
    if not dataset.data.is_dir():
        raise SystemExit(
            f"needs ../shared/data/{dataset.data.name} (see data_specs/{dataset.spec.name})"
        )
    if any(m.startswith("separate") for m in args.models):
        raise SystemExit("--steps trains ours_* and joint_unet only")
    torch.set_num_threads(args.threads)
    spec = load_data_spec(dataset.spec)
    if args.val_cases:
        hold_out(spec, args.val_cases)
    train = train_data(spec, args.pipeline, args)
    val = DataLoader(MultiModalDataset(spec, "val"), batch_size=2, collate_fn=collate)
    task_classes = {t: spec.tasks[t].num_classes for t in dataset.sequence_of}
    sizes = {"train_samples": len(train), "val_samples": len(val.dataset)}
    for name in args.models:
        torch.manual_seed(args.seed)
        model = build_named(name, task_classes, dataset)
        info = train_steps(
            model, list(task_classes), epochs_of_batches(train, args), args.steps, args.lr
        )
        dice = dice_scores(model, {t: list(spec.tasks[t].classes) for t in task_classes}, val)
        record = {
            "model": name,
            "pipeline": args.pipeline,
            "augment": args.augment if args.pipeline == "ours" else None,
            "crop_foreground": args.crop_foreground if args.pipeline == "ours" else None,
            "steps": args.steps,
            "seed": args.seed,
            "init": "smp",  # since MultiTaskSegmenter.initialize(); smp's Unet always had it
            "dice": dice,
            "cpu_seconds": info["seconds"],
            "wall_seconds": info["wall_seconds"],
            "date": datetime.date.today().isoformat(),
            "machine": _cpu(),
            "threads": args.threads,
            **sizes,
        }
        if dataset.name != "myops":  # MyoPS lines stay as they were (crop 256 unless noted)
            record |= {"dataset": dataset.name, "crop": args.crop}
        if args.val_cases:  # a fold; lines without "val" used the spec's split
            record["val"] = sorted(args.val_cases)
        print(json.dumps(record), flush=True)
        args.log.parent.mkdir(parents=True, exist_ok=True)
        with args.log.open("a") as log:
            log.write(json.dumps(record) + "\n")


def hold_out(spec, val_cases: list[str]) -> None:
    """Replace the spec's split by a fold: validate on ``val_cases``, train on every other case."""
    unknown = sorted(set(val_cases) - set(spec.all_ids()))
    if unknown:
        raise SystemExit(f"--val-cases: no such case {unknown}; the data set has {spec.all_ids()}")
    exact = "|".join(re.escape(c) for c in val_cases)
    # a pattern rule in the shape the spec's own rules have (the loader filled in its defaults)
    rule = {**spec.splits["train"], "ids": None, "fraction": None}
    spec.splits = {
        "train": rule | {"pattern": f"^(?!(?:{exact})$)"},
        "val": rule | {"pattern": f"^(?:{exact})$"},
    }


def summarize(log: Path, dataset: Dataset = DATASETS["myops"]) -> str:
    """Mean ± sd (and min–max) of foreground Dice per setting over the seeds in the log, on the
    spec's split; where a setting was also trained on ``--val-cases`` folds, a second table with
    the mean over folds of seed 0 (the spec's split counting as the fold of its own val cases)."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records = [r for r in records if r.get("dataset", "myops") == dataset.name]
    tasks = list(dataset.sequence_of)
    on_spec_split = _group([r for r in records if "val" not in r])
    lines = _table(on_spec_split, tasks, "seeds", lambda r: str(r["seed"]))
    folds = {
        key: runs
        for key, runs in _group([r for r in records if r["seed"] == 0]).items()
        if any("val" in r for r in runs)
    }
    if folds:
        lines += ["", "Folds (seed 0; `spec` = the spec's own split):", ""]
        lines += _table(folds, tasks, "validated on", lambda r: "+".join(r.get("val", ["spec"])))
    return "\n".join(lines) + "\n"


def _group(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["model"], r["pipeline"], r["augment"], r["crop_foreground"], r["steps"], _init(r))
        groups.setdefault(key, []).append(r)
    return groups


def _table(
    groups: dict[tuple, list[dict]], tasks: list[str], over: str, name: Callable[[dict], str]
) -> list[str]:
    """One row per setting: mean ± sample sd (min–max) over its runs, ``over`` naming them."""
    lines = [
        f"| model | init | pipeline | steps | {over} | "
        + " | ".join(f"{t} Dice" for t in tasks)
        + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in tasks) + " |",
    ]
    for (model, pipeline, augment, fg, steps, init), runs in sorted(
        groups.items(), key=lambda g: (g[0][4], g[0][0], str(g[0][1:]))
    ):
        what = (
            "plain (centre crop ±16, flips)"
            if pipeline == "plain"
            else f"augment {augment}, crop_foreground {fg}"
        )
        cells = []
        for t in tasks:
            values = [r["dice"][t] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(
                f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f})"
            )
        names = ",".join(name(r) for r in sorted(runs, key=lambda r: (r["seed"], name(r))))
        lines.append(
            f"| {model} | {init} | {what} | {steps} | {names} | " + " | ".join(cells) + " |"
        )
    return lines


def _init(record: dict) -> str:
    """How the non-encoder layers were initialised: smp's way for smp's Unet and, since
    ``MultiTaskSegmenter.initialize``, for ours; PyTorch's defaults in our earlier lines."""
    if "init" in record or not record["model"].startswith("ours"):
        return record.get("init", "smp")
    return "pytorch"


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


def markdown(results: dict, meta: dict, dataset: Dataset = DATASETS["myops"]) -> str:
    tasks = list(dataset.sequence_of)
    lines = [
        f"Measured {meta['date']} on {meta['machine']} ({meta['threads']} threads), torch {meta['torch']}, "
        f"bf16 autocast, {meta['budget_cpu_s_per_model'] / 60:.1f} CPU-minutes of training per model "
        f"({meta['budget_cpu_s_per_model'] / 60 / meta['threads']:.1f} min on {meta['threads']} "
        "thread(s)), random "
        f"{meta['crop']}² crops, CE + Dice per task. {dataset.val_note}",
        "",
        "| model | "
        + " | ".join(f"{t} Dice" for t in tasks)
        + " | optimizer steps | CPU time | wall time |",
        "| --- | " + " | ".join("---" for _ in tasks) + " | --- | --- | --- |",
    ]
    best = {t: max(r["dice"][t] for r in results.values()) for t in tasks}
    for name, r in results.items():
        cells = [
            (f"**{r['dice'][t]:.3f}**" if r["dice"][t] == best[t] else f"{r['dice'][t]:.3f}")
            for t in tasks
        ]
        steps = (
            r["steps"]
            if isinstance(r["steps"], int)
            else " / ".join(str(v) for v in r["steps"].values())
        )
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {steps} | {r['seconds'] / 60:.1f} min | {r['wall_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


RESULTS_HEAD = """# Results on real data

`bench/realdata.py`: MyoPS 2020 cardiac MR (train Case3001–3020, evaluate Case3021–3025), three
tasks each labelled on its own sequence: anatomy on C0 (bSSFP cine), scar on LGE, edema on T2.
Every model trains for the same budget of CPU time on the same CPU (separate models get that
budget *each*: `separate_*` spend three budgets in all). The budget is counted in CPU time of the
benchmark process, not wall time, so other work on a shared machine makes the run take longer but
gives no model less compute than another. Reproduce with
`python bench/realdata.py --budget-minutes M --threads T --results docs/results.md`
(`--seed S` for another seed, `--models NAME …` for some of the models only).

"""

RESULTS_TAIL = """
Models: `ours_branches` = one ResNet34 per sequence, attention fusion per stride, modality dropout
0.2, gated heads (anatomy on the shared decoder, scar and edema with decoders of their own);
`ours_early_gated` = the three sequences stacked into one ResNet50 trunk, one shared decoder, gated
heads for scar and edema; `ours_early_r34` = the same on a ResNet34 trunk; `joint_unet` = one `smp.Unet("resnet50")` on the stacked sequences with
one output group per task (the strongest simple baseline); `separate_own` = three
`smp.Unet("resnet50")`, each on its task's own sequence; `separate_stacked` = three, each on all
three sequences. Steps of separate models are listed per task.

Data: X. Zhuang et al., "MyoPS: A benchmark of myocardial pathology segmentation combining
three-sequence cardiac magnetic resonance images", Medical Image Analysis, 2023; X. Zhuang,
"Multivariate mixture model for myocardial segmentation combining multi-source images", IEEE TPAMI,
2019. The data is not redistributed with this project.
"""


if __name__ == "__main__":
    main()
