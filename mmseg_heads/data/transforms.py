"""Padding shared by training batches and inference, and the flips of test-time augmentation
(training augmentation lives in :mod:`.augment`).

Images are ``C×H×W`` arrays, labels ``H×W`` int64 arrays; padding gives images 0 (the mean after
normalisation) and labels :data:`IGNORE_INDEX`, so padded pixels never reach a loss or a metric.
"""

from __future__ import annotations

import numpy as np
import torch

from mmseg_heads.data.spec import IGNORE_INDEX

Arrays = dict[str, np.ndarray]

#: Test-time flips by name (``eval.tta``): the image dimension each one mirrors.
TTA_FLIPS = {"hflip": -1, "vflip": -2}


def pad_to(images: Arrays, labels: Arrays, height: int, width: int) -> tuple[Arrays, Arrays]:
    """Pad at the bottom and right to at least ``height×width`` (numpy arrays, or torch tensors
    with any leading dimensions, e.g. the batches ``augment_on: gpu`` crops on the device)."""

    def pad(array: np.ndarray, value) -> np.ndarray:
        h, w = array.shape[-2:]
        if h >= height and w >= width:
            return array
        if isinstance(array, torch.Tensor):
            extra = (0, max(0, width - w), 0, max(0, height - h))
            return torch.nn.functional.pad(array, extra, value=value)
        spec = [(0, 0)] * (array.ndim - 2) + [(0, max(0, height - h)), (0, max(0, width - w))]
        return np.pad(array, spec, constant_values=value)

    return (
        {k: pad(v, 0.0) for k, v in images.items()},
        {k: pad(v, IGNORE_INDEX) for k, v in labels.items()},
    )


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
