"""Geometric augmentation drawn once per sample and applied to every modality and every label.

Images are ``C×H×W`` arrays, labels ``H×W`` int64 arrays; padding gives images 0 (the mean after
normalisation) and labels :data:`IGNORE_INDEX`, so padded pixels never reach a loss or a metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmseg_heads.data.spec import IGNORE_INDEX

Arrays = dict[str, np.ndarray]


def pad_to(images: Arrays, labels: Arrays, height: int, width: int) -> tuple[Arrays, Arrays]:
    """Pad at the bottom and right to at least ``height×width``."""

    def pad(array: np.ndarray, value) -> np.ndarray:
        h, w = array.shape[-2:]
        if h >= height and w >= width:
            return array
        spec = [(0, 0)] * (array.ndim - 2) + [(0, max(0, height - h)), (0, max(0, width - w))]
        return np.pad(array, spec, constant_values=value)

    return (
        {k: pad(v, 0.0) for k, v in images.items()},
        {k: pad(v, IGNORE_INDEX) for k, v in labels.items()},
    )


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class JointTransform:
    """Random crop (padding first when the image is smaller) and flips, shared by all arrays.

    Args:
        crop: side of the square crop, or ``None`` for no crop.
        hflip: flip left-right with probability 0.5.
        vflip: flip up-down with probability 0.5.
    """

    crop: int | None = None
    hflip: bool = True
    vflip: bool = False

    def __call__(
        self, images: Arrays, labels: Arrays, rng: np.random.Generator
    ) -> tuple[Arrays, Arrays]:
        if self.crop is not None:
            images, labels = pad_to(images, labels, self.crop, self.crop)
            h, w = next(iter(images.values())).shape[-2:]
            top = int(rng.integers(0, h - self.crop + 1))
            left = int(rng.integers(0, w - self.crop + 1))
            window = (slice(top, top + self.crop), slice(left, left + self.crop))
            images = {k: v[(..., *window)] for k, v in images.items()}
            labels = {k: v[window] for k, v in labels.items()}
        for enabled, axis in ((self.hflip, -1), (self.vflip, -2)):
            if enabled and rng.random() < 0.5:
                images = {k: np.flip(v, axis) for k, v in images.items()}
                labels = {k: np.flip(v, axis) for k, v in labels.items()}
        return (
            {k: np.ascontiguousarray(v) for k, v in images.items()},
            {k: np.ascontiguousarray(v) for k, v in labels.items()},
        )
