"""``mmseg-heads inspect SPEC_OR_CONFIG``: validate, then show data, levels and parameter counts."""

from __future__ import annotations

import copy
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmseg_heads.atomic import check_output_path, checkpoint_bytes, format_bytes, write_atomic
from mmseg_heads.config import Config, load_config
from mmseg_heads.data.augment import TrainTransform
from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.scan import ScanResult, scan
from mmseg_heads.data.spec import IGNORE_INDEX, DataSpec, load_data_spec, load_yaml
from mmseg_heads.engine.batch_size import Shapes, memory_guidance
from mmseg_heads.engine.compile_mode import describe as describe_compile
from mmseg_heads.engine.loaders import augment_batch, batch_seed, train_dataset, train_loader
from mmseg_heads.engine.run import model_from_config
from mmseg_heads.engine.run_dir import numbered_checkpoints, numbered_kind, optimizer_slots
from mmseg_heads.engine.threads import choose_threads
from mmseg_heads.errors import UserError
from mmseg_heads.models.gates import AttentionGate
from mmseg_heads.models.heads import TaskModalityAttention
from mmseg_heads.models.model import MultiTaskSegmenter
from mmseg_heads.report import plots
from mmseg_heads.report.augment_preview import augment_preview_png

PREVIEW = "--augment-preview"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="validate a data spec or config and describe it",
        description="Modalities, tasks, classes, samples per split, class pixel counts; for a config "
        "also the trunk's levels (stride, channels) per modality and fused, and parameter counts.",
        epilog="example: mmseg-heads inspect configs/seed_vgg16_resnet50.yaml --size 512",
    )
    p.add_argument("path", help="data spec or config (YAML)")
    p.add_argument("--data-root", help="folder that replaces the data spec's `root`")
    p.add_argument(
        "--size",
        type=int,
        default=512,
        help="input side used to print feature-map sizes (default 512)",
    )
    p.add_argument(
        "--no-counts", action="store_true", help="skip reading label files for class pixel counts"
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="read every data file again, ignoring and not writing the scan cache "
        "(~/.cache/mmseg_heads/scan; see docs/troubleshooting.md)",
    )
    p.add_argument(
        PREVIEW,
        metavar="OUT.png",
        help="config only: also write a PNG grid of augmented training crops as the model "
        "receives them, every task's label overlaid (needs the report extra; docs/training.md)",
    )
    p.add_argument(
        "--preview-samples",
        type=int,
        default=4,
        metavar="N",
        help="samples (rows) in the augmentation preview (default 4)",
    )
    p.add_argument(
        "--preview-seed",
        type=int,
        metavar="SEED",
        help="seed of the preview's sample order and augmentations "
        "(default: the config's train.seed, i.e. what epoch 1 of training draws)",
    )


def describe_spec(
    spec: DataSpec, counts: bool = True, scanned: ScanResult | None = None
) -> list[str]:
    """Lines describing ``spec``; class pixel counts come from ``scanned``'s label histograms
    where they can (no file is read again), else from reading the label files."""
    lines = [f"data spec {spec.path} (name {spec.name!r}, root {spec.root})", "", "modalities:"]
    inputs = spec.input_channels()
    for m in spec.modalities.values():
        channels = f"channels {m.channels}"
        if spec.context:
            channels += (
                f" × {2 * spec.context + 1} slices (context {spec.context}) = {inputs[m.name]} in"
            )
        lines.append(f"  {m.name:<12} {channels}  normalize {m.normalize}  files {m.files}")
    lines += ["", "tasks:"]
    for t in spec.tasks.values():
        on = f"  annotated on {', '.join(t.annotated_on)}" if t.annotated_on else ""
        optional = "  (optional)" if t.optional else ""
        lines.append(
            f"  {t.name:<12} {t.num_classes} classes: {', '.join(t.classes)}{on}{optional}"
        )
    lines += ["", "splits:"]
    for split in spec.splits:
        dataset = MultiModalDataset(spec, split)
        cases = f" ({len(dataset.cases)} cases)" if spec.volume is not None else ""
        lines.append(f"  {split:<12} {len(dataset)} samples{cases}")
        if counts:
            lines += _class_counts(dataset, scanned)
    return lines


def _class_counts(dataset: MultiModalDataset, scanned: ScanResult | None = None) -> list[str]:
    lines = []
    for task in dataset.spec.tasks.values():
        known = scanned.class_pixels(dataset.spec, task.name, dataset.cases) if scanned else None
        labelled, counter = known if known is not None else _read_class_counts(dataset, task.name)
        # every class, those with no pixel too: a class that never occurs must stand out
        parts = [f"{name} {counter[i]}" for i, name in enumerate(task.classes)]
        if counter[IGNORE_INDEX]:
            parts.append(f"ignore {counter[IGNORE_INDEX]}")
        absent = [name for i, name in enumerate(task.classes) if counter[i] == 0]
        warning = f"  (no pixel of {', '.join(absent)}!)" if absent else ""
        lines.append(f"    {task.name}: {labelled} labelled; pixels: {', '.join(parts)}{warning}")
    return lines


def _read_class_counts(dataset: MultiModalDataset, task: str) -> tuple[int, Counter]:
    """``(labelled samples, pixels per class index)`` of ``task``, reading every label file."""
    counter: Counter = Counter()
    labelled = 0
    for sample_id in dataset.ids:
        path = dataset.spec.label_file(task, sample_id)
        if not path.is_file():
            continue
        labelled += 1
        labels, _ = dataset.read_labels(sample_id, (0, 0))
        values, numbers = np.unique(labels[task], return_counts=True)
        counter.update(dict(zip(values.tolist(), numbers.tolist(), strict=True)))
    return labelled, counter


def describe_model(model: MultiTaskSegmenter, size: int) -> list[str]:
    trunk = model.trunk
    groups = list(trunk.source_levels)
    lines = ["", f"trunk levels for a {size}×{size} input (channels@height×width):"]
    header = f"  {'stride':>6}  " + "  ".join(f"{g:>14}" for g in groups) + f"  {'fused':>14}"
    lines.append(header)
    for level in trunk.levels:
        side = size // level.stride
        cells = []
        for group in groups:
            match = [lv for lv in trunk.source_levels[group] if lv.stride == level.stride]
            cells.append(f"{match[0].channels}@{side}×{side}" if match else "—")
        lines.append(
            f"  {level.stride:>6}  "
            + "  ".join(f"{c:>14}" for c in cells)
            + f"  {f'{level.channels}@{side}×{side}':>14}"
        )
    lines += ["", "parameters:"]

    def row(label: str, kind: str, module: nn.Module, note: str = "") -> str:
        return f"  {label:<28} {kind:<18} {_count(module):>12,}{note}"

    seen: set[int] = set()
    for group, encoder in trunk.encoders.items():
        shared = " (shared)" if id(encoder) in seen else ""
        seen.add(id(encoder))
        lines.append(row(f"encoder {group}", encoder.name, encoder, shared))
    lines.append(
        row(
            "fusion",
            f"{type(next(iter(trunk.fusions.values()))).__name__} ×{len(trunk.fusions)}",
            trunk.fusions,
        )
    )
    if model.decoder is not None:
        lines.append(row("shared decoder", "UnetDecoder", model.decoder))
    for task, head in model.heads.items():
        gates = _gate_count(head)
        lines.append(
            row(f"head {task}", type(head).__name__, head, f" (gates {gates:,})" if gates else "")
        )
    lines.append(row("total", "", model))
    return lines


def _gate_count(head: nn.Module) -> int:
    """Parameters of a head's attention gates and task-specific modality attention."""
    return sum(
        _count(m) for m in head.modules() if isinstance(m, (AttentionGate, TaskModalityAttention))
    )


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def checkpoint_guidance(model: nn.Module, train: dict) -> str:
    """How large a checkpoint is, and what ``checkpoint_every``/``keep_checkpoints`` keep."""
    slots = optimizer_slots(train["optimizer"])
    size = checkpoint_bytes(sum(p.numel() for p in model.parameters()), slots)
    text = f"checkpoint: about {format_bytes(size)} per file (weights + {train['optimizer']} state)"
    every = train["checkpoint_every"]
    if not every:
        return text + "; best.pt and last.pt (one file when they are the same epoch)"
    kind = numbered_kind(train)  # epoch_<N>.pt, or step_<N>.pt with a train.steps budget
    kept = numbered_checkpoints(train)
    every_text = f"one every {every} {kind}s" + (
        ", all kept" if train["keep_checkpoints"] is None else ""
    )
    return (
        text + f"; plus {kept} {kind}_<N>.pt file{'s' if kept != 1 else ''} kept "
        f"({every_text}; about {format_bytes(kept * size)}) beside best.pt and last.pt"
    )


def check_data(spec: DataSpec, *, cache: bool = True) -> ScanResult:
    """Scan every file (``cache``: through the scan cache); print warnings; raise one error
    listing every problem found."""
    result = scan(spec, cache=cache)
    for warning in result.warnings:
        print(
            f"warning: {spec.path}: {warning.field + ': ' if warning.field else ''}{warning.message}",
            file=sys.stderr,
        )
    result.raise_errors(spec)
    return result


def check_augment_preview(path: str | Path, samples: int) -> Path:
    """Fail before any work when the preview cannot be drawn or written to ``path``.

    Raises:
        UserError: naming ``path`` and ``--augment-preview`` (or ``--preview-samples``).
    """
    path = Path(path)
    if samples < 1:
        raise UserError(f"must be at least 1, got {samples}", field="--preview-samples")
    if path.suffix.lower() != ".png":
        raise UserError("must name a .png file, e.g. augment_preview.png", file=path, field=PREVIEW)
    check_output_path(path, field=PREVIEW, folder=False)
    folder = path.parent
    if not folder.is_dir():
        raise UserError(
            f"folder {folder} does not exist; create it or choose another path",
            file=path,
            field=PREVIEW,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"folder {folder} is not writable; choose another path", file=path, field=PREVIEW
        )
    if not plots.available():
        raise UserError(
            "needs matplotlib, which is not installed: pip install 'mmseg-heads[report]'",
            file=path,
            field=PREVIEW,
        )
    return path


def augmented_samples(config: Config, count: int, seed: int | None = None) -> list[dict]:
    """The first ``count`` training crops of epoch 1, in the loader's order and with its
    augmentation draws; ``seed`` replaces ``train.seed`` (``None``: keep it). With
    ``augment_on: gpu`` they are augmented as one batch, as the trainer does (the draws equal the
    run's when ``count`` is its batch size)."""
    train = {**config.train, "workers": 0}
    if seed is not None:
        train["seed"] = seed
    dataset = train_dataset(config.spec, train)
    if len(dataset) == 0:
        raise UserError("the train split has no samples to preview", field=PREVIEW)
    loader = train_loader(dataset, train, batch_size=count, epoch=1)
    samples = [dataset[key] for key in list(loader.sampler)[:count]]
    augment = dataset.transform.batch_augment()
    if augment is None:
        return samples
    batch = augment_batch(collate(samples), augment, batch_seed(train["seed"], 1, 0))
    crop = train["crop"]  # without the padding to a multiple of 32, as the loader's crops
    return [
        {
            **sample,
            "images": {
                k: v[index, :, :crop, :crop].contiguous() for k, v in batch["images"].items()
            },
            "labels": {k: v[index, :crop, :crop] for k, v in batch["labels"].items()},
        }
        for index, sample in enumerate(samples)
    ]


def write_augment_preview(
    config: Config, out_path: str | Path, samples: int = 4, seed: int | None = None
) -> Path:
    """Write the augmentation preview PNG (:mod:`mmseg_heads.report.augment_preview`) of
    ``samples`` training crops to ``out_path``, atomically; ``seed`` as in
    :func:`augmented_samples`.

    Raises:
        WriteError: the file could not be written (a previous one is unchanged).
    """
    items = augmented_samples(config, samples, seed)
    used = config.train["seed"] if seed is None else seed
    write_atomic(out_path, augment_preview_png(items, config.spec, config.train, used))
    return Path(out_path)


def run(args) -> int:
    path = Path(args.path)
    raw = load_yaml(path)
    # A data spec names modalities, tasks or splits (a config never does): one that lacks
    # `modalities` is still a spec, reported as such, not as a config with six unknown keys.
    spec_only = bool({"modalities", "tasks", "splits"} & set(raw))
    preview = None
    if args.augment_preview is None and (args.preview_samples, args.preview_seed) != (4, None):
        raise UserError("needs --augment-preview OUT.png", field="--preview-samples/--preview-seed")
    if args.augment_preview is not None:
        if spec_only:
            raise UserError(
                "needs a config (a data spec has no train settings to augment with)",
                file=path,
                field=PREVIEW,
            )
        preview = check_augment_preview(args.augment_preview, args.preview_samples)
    if spec_only:
        spec = load_data_spec(path, data_root=args.data_root)
        scanned = check_data(spec, cache=not args.no_cache)
        print("\n".join(describe_spec(spec, counts=not args.no_counts, scanned=scanned)))
        print("\nOK")
        return 0
    config = load_config(path, data_root=args.data_root)
    scanned = check_data(config.spec, cache=not args.no_cache)
    print("\n".join(describe_spec(config.spec, counts=not args.no_counts, scanned=scanned)))
    # Only shapes are needed here: never download weights to describe a model.
    offline = copy.deepcopy(config.raw)
    offline["model"]["pretrained"] = "none"
    offline["model"]["encoders"] = {
        k: (v if isinstance(v, str) else v["name"]) for k, v in offline["model"]["encoders"].items()
    }
    model = model_from_config(Config(path=config.path, raw=offline, spec=config.spec))
    print("\n".join(describe_model(model, args.size)))
    shapes = Shapes.from_spec(config.spec, config.train["crop"])
    print("\n".join(memory_guidance(model, shapes, config.train["batch_size"])))
    print("\n" + checkpoint_guidance(model, config.train))
    threads, why = choose_threads(config.train["threads"])
    print(f"\nCPU threads for training: {threads} ({why})")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch.compile for training: {describe_compile(config.train['compile'], device)}")
    print(f"augmentation: {TrainTransform.from_train_config(config.train).describe()}")
    if preview is not None:
        written = write_augment_preview(config, preview, args.preview_samples, args.preview_seed)
        print(f"\naugmentation preview: {written}")
    print("\nOK")
    return 0
