"""``train.batch_size: auto``: measure the batch size on this machine instead of guessing it.

- On a GPU: the largest batch whose training step fits the memory budget (90% of the device),
  doubling from 2 until a step runs out of memory or over the budget.
- On the CPU: memory is rarely the limit, time per sample is; larger batches stop paying once the
  cores are busy. Doubling from 2, each candidate's step is timed; the smallest batch within 5% of
  the fastest per sample wins (more optimizer steps per epoch at the same speed).

Probing runs on a copy of the model with random inputs of the training crop, under a forked RNG:
the run itself (weights, BatchNorm statistics, random streams) is exactly as with a fixed size.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mmseg_heads.atomic import format_bytes
from mmseg_heads.data.dataset import PAD_MULTIPLE
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import round_up
from mmseg_heads.engine.distributed import World, all_reduce_min
from mmseg_heads.engine.precision import autocast

log = logging.getLogger(__name__)

CANDIDATES = (2, 4, 8, 16, 32, 64, 128, 256)
#: Activation memory is measured on crops of at most this side, then scaled by the pixel count:
#: every level of a crop that is a multiple of 32 grows with its pixels, so the scaling is exact
#: up to per-sample scalars, and measuring a 512² VGG16 U-Net at batch 3 would hold ~10 GB.
PROBE_SIDE = 128
GPU_MEMORY_BUDGET = 0.9
#: A larger batch must be this much faster per sample to count as faster (timing noise).
CPU_GAIN = 0.05
#: Activations may take at most this share of the memory available when probing starts.
CPU_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Shapes:
    """What a training batch looks like: channels per modality, classes per task, crop side."""

    modalities: dict[str, int]
    tasks: dict[str, int]
    crop: int

    @classmethod
    def from_spec(cls, spec: DataSpec, crop: int) -> Shapes:
        """A training batch's shapes: crops padded as ``collate`` pads them."""
        return cls(
            spec.input_channels(),
            {t.name: t.num_classes for t in spec.tasks.values()},
            round_up(crop, PAD_MULTIPLE),
        )

    def batch(self, size: int, device: torch.device, generator: torch.Generator) -> tuple:
        images = {
            m: torch.randn(size, c, self.crop, self.crop, generator=generator).to(
                device, memory_format=torch.channels_last
            )
            for m, c in self.modalities.items()
        }
        labels = {
            t: torch.randint(0, n, (size, self.crop, self.crop), generator=generator).to(device)
            for t, n in self.tasks.items()
        }
        return images, labels


def training_step(
    model: nn.Module, shapes: Shapes, size: int, device: torch.device, precision: str
) -> None:
    """Forward, a cross-entropy per task, backward: what one step of this batch size costs."""
    images, labels = shapes.batch(size, device, torch.Generator().manual_seed(size))
    with autocast(precision, device):
        logits = model(images)
    loss = sum(F.cross_entropy(logits[t].float(), y) for t, y in labels.items())
    loss.backward()
    model.zero_grad(set_to_none=True)


def activation_bytes_per_sample(
    model: nn.Module, shapes: Shapes, device: torch.device, precision: str
) -> int:
    """Bytes autograd keeps for the backward pass per sample: what a batch costs in memory.

    Counted from the tensors saved for backward (each storage once, parameters left out) at batch
    2 and 3; their difference is the per-sample share, free of what every batch holds anyway.
    A crop larger than :data:`PROBE_SIDE` is measured at that side and scaled by the pixels.
    """
    if shapes.crop > PROBE_SIDE:
        measured = activation_bytes_per_sample(
            model, replace(shapes, crop=PROBE_SIDE), device, precision
        )
        return round(measured * (shapes.crop / PROBE_SIDE) ** 2)
    model = copy.deepcopy(model).train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(size: int) -> int:
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        images, _ = shapes.batch(size, device, torch.Generator().manual_seed(size))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast(precision, device):
                model(images)
        return sum(storages.values())

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # batches of 2 and 3, not 1 and 2: BatchNorm refuses one value per channel, which a
        # batch of 1 gives at the deepest stride of a small crop (32² -> 1×1)
        return max(0, saved_bytes(3) - saved_bytes(2))


def choose_batch_size(
    model: nn.Module, shapes: Shapes, device: torch.device, precision: str, *, limit: int
) -> tuple[int, str]:
    """The batch size to train with and a one-line reason with the measurements behind it.

    ``limit``: the largest batch worth trying (this process's share of the training split).
    """
    candidates = [c for c in CANDIDATES if c <= max(2, limit)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if device.type == "cuda":
            probe = copy.deepcopy(model).train()
            return _largest_fitting(probe, shapes, device, precision, candidates)
        per_sample = activation_bytes_per_sample(model, shapes, device, precision)
        affordable = CPU_MEMORY_SHARE * _available_memory() / max(per_sample, 1)
        within_memory = [c for c in candidates if c <= affordable] or candidates[:1]
        probe = copy.deepcopy(model).train()  # after the measurement's own copy is gone
        return _fastest_per_sample(probe, shapes, device, precision, within_memory)


def run_batch_size(
    requested: int | str,
    started_with: int | None,
    model: nn.Module,
    shapes: Shapes,
    *,
    device: torch.device,
    precision: str,
    samples: int,
    world: World,
) -> int:
    """A training run's batch size per process, logged when ``auto``: ``requested`` when a
    number, else the one the run started with (a resume keeps it: ``started_with``), else
    :func:`choose_batch_size`'s, the smallest over the processes (``samples``: the training
    split's size)."""
    if requested != "auto":
        return requested
    if started_with is not None:
        log.info("batch_size auto: %d, as chosen when this run started", started_with)
        return started_with
    size, reason = choose_batch_size(model, shapes, device, precision, limit=samples // world.size)
    size = all_reduce_min(size, world)  # every process steps with the same batch size
    log.info("batch_size auto: %d per process; %s", size, reason)
    return size


def _largest_fitting(
    model: nn.Module, shapes: Shapes, device: torch.device, precision: str, candidates: list[int]
) -> tuple[int, str]:
    budget = GPU_MEMORY_BUDGET * torch.cuda.mem_get_info(device)[1]
    fitting: list[tuple[int, int]] = []
    for size in candidates:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            training_step(model, shapes, size, device, precision)
        except torch.cuda.OutOfMemoryError:
            break
        peak = torch.cuda.max_memory_allocated(device)
        if peak > budget:
            break
        fitting.append((size, peak))
    torch.cuda.empty_cache()
    if not fitting:
        return 1, "not even a batch of 2 fits the GPU's memory budget"
    measured = ", ".join(f"{s} → {p / 2**30:.1f} GiB" for s, p in fitting)
    chosen = fitting[-1][0]
    return chosen, (
        f"the largest that fits {GPU_MEMORY_BUDGET:.0%} of the GPU's memory "
        f"({budget / 2**30:.1f} GiB; peak per step: {measured})"
    )


def _fastest_per_sample(
    model: nn.Module, shapes: Shapes, device: torch.device, precision: str, candidates: list[int]
) -> tuple[int, str]:
    timings: dict[int, float] = {}
    for size in candidates:
        best_so_far = min(timings.values(), default=None)
        training_step(model, shapes, size, device, precision)  # warm-up: allocator, oneDNN plans
        timings[size] = min(_timed(model, shapes, size, device, precision) for _ in range(2)) / size
        if best_so_far is not None and timings[size] > best_so_far * (1 - CPU_GAIN):
            break  # no longer clearly faster per sample: larger batches will not be either
    best = min(timings.values())
    chosen = min(s for s, t in timings.items() if t <= best * (1 + CPU_GAIN))
    measured = ", ".join(f"{s} → {t * 1e3:.0f} ms" for s, t in timings.items())
    return chosen, (
        f"the smallest within {CPU_GAIN:.0%} of the fastest per sample on the CPU "
        f"(time per sample: {measured})"
    )


def _timed(
    model: nn.Module, shapes: Shapes, size: int, device: torch.device, precision: str
) -> float:
    started = time.perf_counter()
    training_step(model, shapes, size, device, precision)
    return time.perf_counter() - started


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume plenty
        return 2**40


def memory_guidance(model: nn.Module, shapes: Shapes, batch_size: int | str) -> list[str]:
    """What ``inspect`` prints about the batch size: measured activation memory per sample.

    Measured on the CPU for fp32 and bf16 (a GPU's autocast keeps about the same tensors), plus
    weights, gradients and AdamW's two moments (16 bytes per parameter).
    """
    cpu = torch.device("cpu")
    per_sample = {p: activation_bytes_per_sample(model, shapes, cpu, p) for p in ("fp32", "bf16")}
    fixed = 16 * sum(p.numel() for p in model.parameters())
    lines = [
        "",
        f"batch size (train.batch_size {batch_size}, {shapes.crop}² per sample: the crop, padded "
        f"to a multiple of {PAD_MULTIPLE}):",
        f"  activations per sample      {_size(per_sample['fp32'])} fp32, "
        f"{_size(per_sample['bf16'])} bf16",
        f"  weights, gradients, AdamW   {_size(fixed)}",
    ]
    for size in sorted({8, 16, 32} | ({batch_size} if isinstance(batch_size, int) else set())):
        need = {p: fixed + size * b for p, b in per_sample.items()}
        lines.append(
            f"  batch {size:<4} needs about   {_size(need['fp32'])} fp32, {_size(need['bf16'])} bf16"
        )
    lines.append(
        "  `train.batch_size: auto` measures it on the training machine: the largest batch that "
        "fits a GPU, the fastest per sample on a CPU"
    )
    return lines


def _size(size: int) -> str:
    return format_bytes(size, decimals=2)
