"""Data loaders for training and evaluation, built from a config."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mmseg_heads.data.augment import TrainTransform
from mmseg_heads.data.augment.batched import BatchAugment
from mmseg_heads.data.dataset import PAD_MULTIPLE, MultiModalDataset, collate
from mmseg_heads.data.sampling import train_sampler
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.data.transforms import pad_to, round_up
from mmseg_heads.engine.distributed import SINGLE_PROCESS, ShardSampler, World


def train_dataset(spec: DataSpec, train: dict, split: str = "train") -> MultiModalDataset:
    return MultiModalDataset(spec, split, transform=TrainTransform.from_train_config(train))


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` in ``epoch``'s order of a run."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + position


def batch_seed(seed: int, epoch: int, index: int, rank: int = 0) -> int:
    """The seed of ``augment_on: gpu``'s draws for batch ``index`` of ``epoch`` on process ``rank``
    (so a resumed run, skipping batches, draws the same as the uninterrupted one)."""
    return (sample_seed(seed, epoch, index) * 65_537 + rank) % 2**63


def augment_batch(batch: dict, augment: BatchAugment, seed: int) -> dict:
    """A collated batch already on its device, augmented there (``train.augment_on: gpu``)."""
    images = next(iter(batch["images"].values()))
    generator = torch.Generator(device=images.device).manual_seed(seed)
    augmented, labels = augment(batch["images"], batch["labels"], generator, batch.get("origin"))
    side = round_up(augment.crop, PAD_MULTIPLE)  # padded as collate pads the loader's crops
    augmented, labels = pad_to(augmented, labels, side, side)
    # channels_last as to_device makes it (oneDNN and cuDNN convolutions prefer it)
    augmented = {k: v.contiguous(memory_format=torch.channels_last) for k, v in augmented.items()}
    return {**batch, "images": augmented, "labels": labels}


def train_loader(
    dataset: MultiModalDataset,
    train: dict,
    batch_size: int,
    epoch: int,
    world: World = SINGLE_PROCESS,
    *,
    skip_batches: int = 0,
) -> DataLoader:
    """The loader of one epoch: its order and augmentations depend on (seed, epoch) only.

    The epoch's order (shuffled, or drawn by the sample weights) is fixed first; each place in it
    gets its own augmentation seed (:func:`sample_seed`), handed to the dataset with the index. So
    an epoch draws the same batches and augmentations whether the run was resumed or not and
    whatever the number of workers. Under torchrun every process draws the same order of the
    whole split and takes its shard, seeds included. ``skip_batches``: leave out the epoch's
    first batches (trained before a resume from inside the epoch); the rest are the same batches.
    """
    order_seed = train["seed"] * 100_003 + epoch
    generator = torch.Generator().manual_seed(order_seed + 7_919 * world.rank)
    weighted = train_sampler(dataset, generator=torch.Generator().manual_seed(order_seed))
    if weighted is None:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(order_seed))
    else:
        order = list(weighted)
    keys = [
        (int(index), sample_seed(train["seed"], epoch, position))
        for position, index in enumerate(order)
    ]
    sampler = ShardSampler(keys, world, even=True) if world.distributed else keys
    size = len(sampler)
    if skip_batches:
        sampler = list(sampler)[skip_batches * batch_size :]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
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
