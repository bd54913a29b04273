"""Data loaders for training and evaluation, built from a config."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.sampling import train_sampler
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import JointTransform


def train_dataset(spec: DataSpec, train: dict, split: str = "train") -> MultiModalDataset:
    transform = JointTransform(crop=train["crop"], hflip=train["hflip"], vflip=train["vflip"])
    return MultiModalDataset(spec, split, transform=transform)


def train_loader(
    dataset: MultiModalDataset, train: dict, batch_size: int, epoch: int
) -> DataLoader:
    """The loader of one epoch: its shuffle and its workers' seeds depend on (seed, epoch) only.

    So an epoch draws the same batches and augmentations whether the run was resumed or not, and
    every worker of every epoch gets its own seed (DataLoader derives them from the generator).
    """
    generator = torch.Generator().manual_seed(train["seed"] * 100_003 + epoch)
    sampler = train_sampler(dataset, generator=generator)  # labelled slices weighted; None: uniform
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) > batch_size,
        num_workers=train["workers"],
        collate_fn=collate,
        generator=generator,
    )


def eval_loader(spec: DataSpec, split: str, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        MultiModalDataset(spec, split),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
    )
