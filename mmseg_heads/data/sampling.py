"""Training samplers built from what the dataset knows about its samples.

The data spec's ``volume.labelled_weight`` makes slices with a labelled pixel come up more often in
training (most axial slices of a brain MRI show no tumour). The engine asks for the sampler once::

    sampler = train_sampler(dataset, generator=generator)
    DataLoader(dataset, sampler=sampler, shuffle=sampler is None, ...)
"""

from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler

from mmseg_heads.data.dataset import MultiModalDataset


def train_sampler(
    dataset: MultiModalDataset, *, generator: torch.Generator | None = None
) -> WeightedRandomSampler | None:
    """A sampler that draws ``len(dataset)`` samples per epoch by the dataset's sample weights.

    Draws are with replacement, so an epoch keeps its length while labelled slices come up
    ``labelled_weight`` times as often as the others.

    Args:
        dataset: the training dataset.
        generator: seeds the draws (the loader's generator, for reproducible runs).

    Returns:
        The sampler, or ``None`` where every sample weighs the same: then shuffle as usual.
    """
    weights = dataset.sample_weights()
    if weights is None:
        return None
    return WeightedRandomSampler(
        weights, num_samples=len(weights), replacement=True, generator=generator
    )
