"""Data loaders for training and evaluation, built from a config."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.sampling import train_sampler
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import JointTransform
from mmseg_heads.engine.distributed import SINGLE_PROCESS, ShardSampler, World


def train_dataset(spec: DataSpec, train: dict, split: str = "train") -> MultiModalDataset:
    transform = JointTransform(crop=train["crop"], hflip=train["hflip"], vflip=train["vflip"])
    return MultiModalDataset(spec, split, transform=transform)


def train_loader(
    dataset: MultiModalDataset,
    train: dict,
    batch_size: int,
    epoch: int,
    world: World = SINGLE_PROCESS,
) -> DataLoader:
    """The loader of one epoch: its order and its workers' seeds depend on (seed, epoch, rank) only.

    So an epoch draws the same batches and augmentations whether the run was resumed or not, and
    every worker of every epoch gets its own seed (DataLoader derives them from the generator).
    Under torchrun every process draws the same order of the whole split and takes its shard; the
    augmentation seeds also differ per process.
    """
    order_seed = train["seed"] * 100_003 + epoch
    generator = torch.Generator().manual_seed(order_seed + 7_919 * world.rank)
    sampler = train_sampler(dataset, generator=torch.Generator().manual_seed(order_seed))
    if world.distributed:
        if sampler is None:  # uniform weights: one shuffle, the same on every process
            order = torch.randperm(
                len(dataset), generator=torch.Generator().manual_seed(order_seed)
            )
            sampler = order.tolist()
        sampler = ShardSampler([int(i) for i in sampler], world, even=True)
    size = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=size > batch_size,
        num_workers=train["workers"],
        collate_fn=collate,
        generator=generator,
    )


def eval_loader(
    spec: DataSpec, split: str, batch_size: int, workers: int, world: World = SINGLE_PROCESS
) -> DataLoader:
    """Every sample once; under torchrun each process evaluates its shard of the split."""
    dataset = MultiModalDataset(spec, split)
    sampler = (
        ShardSampler(list(range(len(dataset))), world, even=False) if world.distributed else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
    )
