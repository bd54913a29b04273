"""Per-image intensity normalisation, named in the data spec's ``normalize`` field, and the
percentile clipping (``clip_percentiles``) applied before it."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray, how: str | dict) -> np.ndarray:
    """Normalise a ``C×H×W`` float32 image per channel.

    ``how``: ``zscore`` (per image and channel), ``minmax`` (to [0, 1]), ``imagenet`` (8-bit RGB
    scaled to [0, 1], then ImageNet mean/std), ``none``, ``{mean: [...], std: [...]}`` (raw units),
    or ``{scale: s}``.
    """
    image = image.astype(np.float32, copy=False)
    if how == "none":
        return image
    if how == "zscore":
        mean = image.mean(axis=(1, 2), keepdims=True)
        std = image.std(axis=(1, 2), keepdims=True)
        return (image - mean) / np.maximum(std, 1e-6)
    if how == "minmax":
        low = image.min(axis=(1, 2), keepdims=True)
        high = image.max(axis=(1, 2), keepdims=True)
        return (image - low) / np.maximum(high - low, 1e-6)
    if how == "imagenet":
        return _mean_std(image / 255.0, IMAGENET_MEAN, IMAGENET_STD)
    if isinstance(how, dict) and "scale" in how:
        return image * np.float32(how["scale"])
    if isinstance(how, dict):
        return _mean_std(image, how["mean"], how["std"])
    raise ValueError(f"unknown normalisation {how!r}")  # the spec schema rules this out


def clip_percentiles(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip a ``C×H×W`` image per channel to its ``low``-th and ``high``-th percentiles (0–100).

    Tames the few very bright voxels of MRI (vessels, fat, artefacts) that would otherwise squeeze
    the tissue into a narrow band after ``zscore`` or ``minmax``.
    """
    image = image.astype(np.float32, copy=False)
    flat = image.reshape(image.shape[0], -1)
    bounds = np.percentile(flat, [low, high], axis=1).astype(np.float32)  # 2×C
    return np.clip(image, bounds[0].reshape(-1, 1, 1), bounds[1].reshape(-1, 1, 1))


def _mean_std(image: np.ndarray, mean, std) -> np.ndarray:
    mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (image - mean) / std
