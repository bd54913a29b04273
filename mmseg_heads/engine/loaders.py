"""Data loaders for training and evaluation, built from a config."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import JointTransform


def train_loader(spec: DataSpec, train: dict, split: str = "train") -> DataLoader:
    dataset = MultiModalDataset(
        spec,
        split,
        transform=JointTransform(crop=train["crop"], hflip=train["hflip"], vflip=train["vflip"]),
    )
    generator = torch.Generator().manual_seed(train["seed"])
    return DataLoader(
        dataset,
        batch_size=train["batch_size"],
        shuffle=True,
        drop_last=len(dataset) > train["batch_size"],
        num_workers=train["workers"],
        persistent_workers=False,
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
