"""Data-parallel training under ``torchrun``: who this process is, and the few collectives we need.

One process per device; ``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. Without
them (a plain ``mmseg-heads train``) everything here is a no-op on a world of one, so the trainer
has a single code path::

    torchrun --nproc_per_node 2 -m mmseg_heads train configs/demo.yaml

Backends: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from mmseg_heads.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``rank`` 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory, checkpoints, logs and progress bars."""
        return self.rank == 0


#: A plain ``mmseg-heads train``: rank 0 of 1.
SINGLE_PROCESS = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def init_world() -> World:
    """Join the process group torchrun set up (once), or describe a single process."""
    cuda = torch.cuda.is_available()
    if not launched_by_torchrun():
        return World(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        _check_one_gpu_per_process(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), local_rank, dist.get_world_size(), device)


def _check_one_gpu_per_process(local_rank: int) -> None:
    """NCCL needs a GPU of its own for each process; two on one GPU fail deep inside NCCL."""
    gpus = torch.cuda.device_count()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if max(per_node, local_rank + 1) > gpus:
        raise UserError(
            f"torchrun started {per_node} processes on this machine but torch sees {gpus} "
            f"GPU{'s' if gpus != 1 else ''} (each process trains on a GPU of its own); use "
            f"--nproc_per_node {gpus}, or CUDA_VISIBLE_DEVICES= to train on the CPU",
            field="torchrun --nproc_per_node",
        )


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_min(value: int, world: World) -> int:
    """The smallest ``value`` of all processes (``value`` itself without torchrun)."""
    return int(_all_reduce(value, world, "MIN", torch.int64))


def all_reduce_max(value: float, world: World) -> float:
    """The largest ``value`` of all processes (``value`` itself without torchrun)."""
    return float(_all_reduce(value, world, "MAX", torch.float64))


def _all_reduce(value: float, world: World, op: str, dtype: torch.dtype) -> float:
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=dtype, device=_collective_device(world))
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor.item()


def gather_objects(value, world: World) -> list:
    """Every process's ``value`` in rank order (e.g. the RNG states a checkpoint must hold).

    ``value`` may hold tensors: it travels as ``torch.save`` bytes (all_gather_object's own
    unpickler fails on tensors in torch 2.14) and is read back with ``weights_only=True``.
    """
    if not world.distributed:
        return [value]
    buffer = io.BytesIO()
    torch.save(value, buffer)
    out: list = [None] * world.size
    dist.all_gather_object(out, buffer.getvalue())
    return [torch.load(io.BytesIO(data), weights_only=True) for data in out]


def average_gradients(module: torch.nn.Module, world: World) -> None:
    """Average the gradients of parameters DDP does not own (the loss's learned task weights).

    As in DDP, a parameter no process has a gradient for keeps none (the optimizer skips it);
    one that only some processes have joins with zeros from the others.
    """
    if not world.distributed:
        return
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        return
    device = _collective_device(world)
    present = torch.tensor([p.grad is not None for p in parameters], device=device).int()
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    for parameter, anywhere in zip(parameters, present.tolist(), strict=True):
        if anywhere:
            grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            parameter.grad = grad / world.size


def summed_over_processes(parts: tuple[dict, ...], world: World) -> tuple[dict, ...]:
    """Dicts of numbers (an epoch's loss sums, counts…) of every process, summed key by key."""
    if not world.distributed:
        return parts
    merged: tuple[dict, ...] = tuple({} for _ in parts)
    for gathered in gather_objects(parts, world):
        for into, part in zip(merged, gathered, strict=True):
            for key, value in part.items():
                into[key] = into.get(key, 0) + value
    return merged


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, so after the last training step every
    process holds its own last update; evaluation and checkpoints must agree on rank 0's.
    """
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def check_world_fits(samples: int, world: World, *, file: str | Path) -> None:
    """Every process needs at least one training sample."""
    if samples < world.size:
        raise UserError(
            f"the training split has {samples} samples, fewer than the "
            f"{world.size} processes torchrun started",
            file=file,
            field="train",
        )


def sync_batchnorm(model: torch.nn.Module, world: World, *, file: str | Path) -> torch.nn.Module:
    """``train.sync_batchnorm``: BatchNorm statistics over every process's batch (CUDA only)."""
    if not world.distributed:
        log.info("train.sync_batchnorm has no effect in a single process")
        return model
    if world.device.type != "cuda":
        raise UserError(
            "SyncBatchNorm runs only on CUDA devices (torch has no CPU version); set it false "
            "for CPU training (each process then normalises over its own batch)",
            file=file,
            field="train.sync_batchnorm",
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def data_parallel(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """DDP under torchrun, the model itself otherwise.

    ``find_unused_parameters``: heads of tasks without a label in a batch, encoders of
    modalities dropped by ``modality_dropout`` and frozen encoders take no part in some steps.
    """
    if not world.distributed:
        return model
    ids = [world.device.index] if world.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=True
    )


def _collective_device(world: World) -> torch.device:
    # NCCL reduces only CUDA tensors; gloo only CPU tensors.
    return world.device if world.device.type == "cuda" else torch.device("cpu")


class ShardSampler(Sampler[int]):
    """This process's share of a sequence of indices that is the same on every process.

    ``indices`` is drawn once per epoch from a generator seeded identically on every rank (the
    shuffled or weighted order of the single-process run); rank ``r`` takes ``indices[r::size]``.
    Training drops the tail that does not divide evenly (every process must take the same number
    of steps); evaluation keeps every sample exactly once, so shards may differ by one.
    """

    def __init__(self, indices: list[int], world: World, *, even: bool):
        if even:
            indices = indices[: len(indices) - len(indices) % world.size]
        self.indices = indices[world.rank :: world.size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
