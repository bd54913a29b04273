"""Shared helpers of the benchmarks: options, alternating timing, precision, our model, output.

Every figure a benchmark reports is a ratio of variants measured side by side in one run: each
variant is warmed up, then the variants are timed in rounds ``A, B, C, A, B, C, …`` and a ratio is
the median over rounds of the per-round ratio (both sides of a pair saw the same machine load).
Medians of the raw times are printed too, but only the ratios are meant to be compared across
machines or runs.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # encoders are built with pretrained: none

import torch  # noqa: E402

PRECISIONS = ("fp32", "bf16")
NOISY_SPREAD = 1.0  # (max - min) / median of a variant's rounds above which a run is flagged
IGNORE_INDEX = 255

# ----------------------------------------------------------------------------------------------
# options and setup


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; a script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: tiny sizes, 1 round; finishes in seconds"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    p.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="torch.set_num_threads (default: all cores, %(default)s here)",
    )
    p.add_argument("--reps", type=int, default=None, help="timed rounds (default: per script)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls of each variant first")
    return p


def setup(args: argparse.Namespace, *, reps: int, warmup: int) -> torch.device:
    """Threads, seed, device; fills ``args.reps``/``args.warmup`` (quick mode: 1 round, 1 warm-up)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.load_at_start = _load_average()
    if args.reps is None:
        args.reps = 1 if args.quick else reps
    if args.warmup is None:
        args.warmup = 1 if args.quick else warmup
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    return torch.device(args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# timing


@dataclass
class Timings:
    """Seconds per call of each variant, one sample per round, in round order."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, a: str | list[str], b: str | list[str]) -> float:
        """Median over rounds of ``time(a) / time(b)``; a list of names is their summed time."""
        return statistics.median(x / y for x, y in zip(self.total(a), self.total(b), strict=True))

    def total(self, names: str | list[str]) -> list[float]:
        names = [names] if isinstance(names, str) else names
        return [sum(values) for values in zip(*(self.samples[n] for n in names), strict=True)]

    def spread(self, name: str) -> float:
        """(max - min) / median: how noisy the machine was for this variant."""
        values = self.samples[name]
        return (max(values) - min(values)) / statistics.median(values)

    def spreads(self) -> dict[str, float]:
        return {name: self.spread(name) for name in self.samples}


def alternate(
    variants: dict[str, Callable[[], Any]],
    *,
    reps: int,
    warmup: int,
    device: torch.device,
    label: str = "",
) -> Timings:
    """Warm every variant up, then time them in rounds ``A, B, …, A, B, …``.

    The device is synchronised before and after each timed call, so asynchronous CUDA work is
    counted where it was launched. Progress goes to stderr.
    """
    for name, fn in variants.items():
        for _ in range(warmup):
            fn()
        synchronize(device)
        _progress(f"{label} warmed up {name}")
    timings = Timings({name: [] for name in variants})
    for round_index in range(reps):
        gc.collect()
        for name, fn in variants.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            timings.samples[name].append(time.perf_counter() - start)
        _progress(
            f"{label} round {round_index + 1}/{reps}: "
            + ", ".join(f"{n} {timings.samples[n][-1]:.3f}s" for n in variants)
        )
    return timings


def _progress(text: str) -> None:
    print(text.strip(), file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# precision and training steps


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    return precision


def autocast(precision: str, device: torch.device):
    """The trainer's autocast: ``bf16`` to bfloat16 (CPU or CUDA); ``fp32``: nothing."""
    from mmseg_heads.engine.precision import autocast as engine_autocast

    return engine_autocast(check_precision(precision), device)


def default_precision(device: torch.device) -> str:
    """What ``train.precision: auto`` resolves to in mmseg_heads on this device."""
    from mmseg_heads.engine.precision import resolve_precision

    return resolve_precision("auto", device)


def training_step(
    forward: Callable[[], Any],
    loss: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    precision: str,
    device: torch.device,
) -> Callable[[], None]:
    """A step of any model (another package's too) as mmseg_heads' trainer takes one: forward
    under autocast, loss on float32 logits outside it, backward, the trainer's optimizer step
    (``engine.optim.optimizer_step``). Our model's step is :func:`ours_step`."""
    from mmseg_heads.engine.optim import optimizer_step

    def step() -> None:
        with autocast(precision, device):
            out = forward()
        loss(out).backward()
        optimizer_step(optimizer)

    return step


# ----------------------------------------------------------------------------------------------
# our model, losses and synthetic batches


def model_config(encoders: dict, **overrides) -> dict:
    """A ``model`` config section with the schema's defaults filled in (as ``load_config`` does)."""
    from mmseg_heads.config import CONFIG_SCHEMA
    from mmseg_heads.schema import validate

    return validate(
        CONFIG_SCHEMA.fields["model"], {"encoders": encoders, **overrides}, file="bench"
    )


def build_ours(
    encoders: dict, *, modalities: dict[str, int], tasks: dict[str, int], **overrides
) -> torch.nn.Module:
    from mmseg_heads.models.build import build_model

    return build_model(model_config(encoders, **overrides), modalities=modalities, tasks=tasks)


def task_loss(terms: dict | None = None):
    """The package's ``TaskLoss``, ce + dice by default (the config's default terms)."""
    from mmseg_heads.losses.task_loss import TaskLoss

    terms = terms or {"ce": {"weight": 1.0}, "dice": {"weight": 1.0}}
    return TaskLoss(terms, ignore_index=IGNORE_INDEX)


def multitask_loss(tasks: dict[str, int]):
    from mmseg_heads.losses.multitask import MultiTaskLoss

    return MultiTaskLoss({t: task_loss() for t in tasks})


def synthetic_batch(
    modalities: dict[str, int],
    tasks: dict[str, int],
    *,
    batch: int,
    size: int,
    device: torch.device,
    seed: int = 0,
) -> dict:
    """A collated batch like ``MultiModalDataset`` + ``collate`` give: images, labels, has_label.

    Labels are random class indices with a 4-pixel ignore border (as collate's padding makes).
    """
    g = torch.Generator().manual_seed(seed)
    images = {m: torch.randn(batch, c, size, size, generator=g) for m, c in modalities.items()}
    labels = {}
    for t, k in tasks.items():
        label = torch.randint(0, k, (batch, size, size), generator=g)
        label[:, -4:, :] = IGNORE_INDEX
        labels[t] = label
    return {
        "images": {m: v.to(device) for m, v in images.items()},
        "labels": {t: v.to(device) for t, v in labels.items()},
        "has_label": {t: torch.ones(batch, dtype=torch.bool, device=device) for t in tasks},
        "labelled": {t: batch for t in tasks},  # counted on the host, as collate does
    }


#: The ``train`` settings of the optimizer the benchmarks train our model with.
TRAIN_OPTIMIZER = {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-4, "encoder_lr_mult": 1.0}


def trainer_optimizer(
    model: torch.nn.Module, criterion: torch.nn.Module | None = None
) -> torch.optim.Optimizer:
    """The trainer's optimizer (``engine.optim.build_optimizer``: fused AdamW) for our model."""
    from mmseg_heads.engine.optim import build_optimizer

    return build_optimizer(model, criterion, TRAIN_OPTIMIZER)


def as_trained(model: torch.nn.Module, batch: dict) -> tuple[torch.nn.Module, dict]:
    """Model and images in channels-last memory format, as the trainer and evaluator hold them."""
    images = {
        k: v.contiguous(memory_format=torch.channels_last) for k, v in batch["images"].items()
    }
    return model.to(memory_format=torch.channels_last), {**batch, "images": images}


def ours_step(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    batch: dict,
    precision: str,
    device: torch.device,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trained_layout: bool = True,
) -> Callable[[], None]:
    """A training step of our model: the trainer's own (``engine.steps.training_step``).

    ``trained_layout``: channels-last model and images, fused AdamW unless ``optimizer`` is
    given (what ``mmseg-heads train`` does); ``False`` leaves the model and batch as they are
    (``bench/whatif.py`` measures those choices one by one).
    """
    model.train()
    if trained_layout:
        model, batch = as_trained(model, batch)
    optimizer = optimizer or (
        trainer_optimizer(model)
        if trained_layout
        else torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    )
    from mmseg_heads.engine.steps import training_step as engine_step

    check_precision(precision)

    def step() -> None:
        engine_step(model, criterion, optimizer, batch, precision=precision, device=device)

    return step


def profile_steps(steps: dict, device: torch.device, top: int = 12) -> tuple[dict, str]:
    """Self time of the top operators of one call of each step (after the timed rounds).

    On a GPU the operators are ranked by their kernels' time on the device, on the CPU by
    their own CPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def self_us(event) -> float:
        return event.self_device_time_total if cuda else event.self_cpu_time_total

    result, rows = {}, []
    for name, fn in steps.items():
        with profile(activities=activities) as prof:
            fn()
            synchronize(device)
        events = sorted(prof.key_averages(), key=self_us, reverse=True)
        total = sum(self_us(e) for e in events)
        result[name] = {
            e.key: {"self_ms": self_us(e) / 1e3, "calls": e.count} for e in events[:top]
        }
        rows += [[name, e.key, e.count, self_us(e) / 1e3, self_us(e) / total] for e in events[:top]]
    clock = "GPU" if cuda else "CPU"
    text = table(["step", "operator", "calls", f"self {clock} ms", "share"], rows)
    return result, text


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# output


def machine() -> dict:
    """CPU model, cores, torch version, GPU name, date: where and when the numbers were taken."""
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {
        "cpu": model,
        "cores": available_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    info["load_average"] = _load_average()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count, other work shared the machine."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats get 3 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def target(value: float, op: str, bound: float) -> dict:
    """A target check: ``{"value", "target": "<= 0.5", "met"}``."""
    met = value <= bound if op == "<=" else value >= bound
    return {"value": value, "target": f"{op} {bound:g}", "met": bool(met)}


def report(
    name: str,
    args: argparse.Namespace,
    *,
    settings: dict,
    rows: list[dict],
    ratios: dict[str, float],
    targets: dict[str, dict],
    tables: list[str],
    notes: list[str] = (),
    noise: dict[str, float] | None = None,
) -> dict:
    """Print the Markdown tables and write the JSON (when ``--json`` is given).

    ``noise``: ``{variant: spread}`` (``Timings.spreads``); a variant whose slowest round took
    more than twice its fastest one gets a warning: the machine was busy, rerun for numbers.
    """
    noise = dict(noise or {})
    busy = {k: v for k, v in noise.items() if v > NOISY_SPREAD}
    notes = list(notes)
    if busy and not args.quick:
        notes.append(
            f"busy machine: {len(busy)} of {len(noise)} variants had a round over "
            f"{1 + NOISY_SPREAD:g}× their median ({', '.join(sorted(busy)[:4])}"
            f"{', …' if len(busy) > 4 else ''}); medians of paired ratios absorb a few such "
            "rounds, many of them call for a rerun"
        )
    result = {
        "benchmark": name,
        "quick": bool(args.quick),
        "device": args.device,
        "reps": args.reps,
        "warmup": args.warmup,
        "machine": machine() | {"load_average_at_start": getattr(args, "load_at_start", None)},
        "settings": settings,
        "rows": rows,
        "ratios": ratios,
        "targets": targets,
        "notes": notes,
        "spread": noise,
    }
    print(f"## {name}" + (" (quick: smoke sizes, not numbers)" if args.quick else ""))
    m = result["machine"]
    print(
        f"\n{m['cpu']}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['gpu']}" if args.device == "cuda" else "")
        + f"; {args.reps} timed rounds after {args.warmup} warm-up; {m['date']}; load average "
        + f"{m['load_average_at_start']} at start, {m['load_average']} at end\n"
    )
    for text in tables:
        print(text + "\n")
    if targets:
        print(
            table(
                ["target", "value", "goal", "met"],
                [[k, t["value"], t["target"], t["met"]] for k, t in targets.items()],
            )
            + "\n"
        )
    for note in notes:
        print(f"- {note}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return result


def _jsonable(value: Any):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
