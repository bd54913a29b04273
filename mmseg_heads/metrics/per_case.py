"""Per-case (per-volume) Dice and HD95 in millimetres, and their mean ± sd over cases.

MRI challenges (BraTS, MyoPS) and toolkits (nnU-Net, MONAI) score every case on its own, and
papers report mean ± sd over the cases, unlike the split-wide confusion matrix of
:mod:`mmseg_heads.metrics.confusion`. Conventions:

- the **surface** of a mask is ``mask XOR binary_erosion(mask)`` with face connectivity
  (``generate_binary_structure(ndim, 1)``): a voxel is on the surface when one of its 2·ndim face
  neighbours is outside the mask or outside the array;
- distances are Euclidean in millimetres (``spacing`` per array axis, from the NIfTI header), from
  each surface voxel of one mask to the nearest surface voxel of the other;
- **HD95** = max(95th percentile of pred→target, 95th percentile of target→pred), linear
  interpolation (``np.percentile``'s default), as MONAI's
  ``compute_hausdorff_distance(percentile=95, directed=False)``. medpy's ``hd95`` instead takes
  the 95th percentile of both sets pooled, which reads lower when one surface is much larger than
  the other (its few far voxels drown in the other's near ones); the max is the symmetric
  Hausdorff distance's own definition with the max replaced by a percentile.

Undefined values are ``None`` with a ``reason``, never 0 or a made-up distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

EMPTY_BOTH = "empty in label and prediction"
EMPTY_LABEL = "empty label"
EMPTY_PRED = "empty prediction"


def _spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {tuple(spacing)} must be {ndim} positive numbers, one per axis")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of ``mask``, which the caller has padded by one ``False`` voxel per side.

    The padding makes voxels on the array border count as surface whatever ``binary_erosion``'s
    ``border_value``: a mask touching the border of the field of view still has a boundary there.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure)


def surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Surface-to-surface distances in mm, both ways, for 2-D or 3-D masks.

    Args:
        pred: boolean mask (non-zero = inside).
        target: boolean mask of the same shape.
        spacing: voxel size in mm per array axis, in the arrays' axis order.

    Returns:
        ``(pred_to_target, target_to_pred)``: for each surface voxel of ``pred``, the distance to
        the nearest surface voxel of ``target``, and the other way round (float64, in the order of
        ``np.nonzero``). Distances towards an empty mask are ``inf``; an empty mask gives an empty
        array.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    sampling = _spacing(spacing, pred.ndim)
    union = pred | target
    if not union.any():
        return np.zeros(0), np.zeros(0)
    # Crop to the bounding box of both masks: every surface voxel lies inside it, so distances
    # between surface voxels are unchanged, and the EDT of a 512×512×200 volume shrinks to the
    # organ's size. Then pad by one False voxel (see _surface).
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(present[0], present[-1] + 1))
    pred_surface = _surface(np.pad(pred[tuple(box)], 1))
    target_surface = _surface(np.pad(target[tuple(box)], 1))

    def to(surface: np.ndarray, sources: np.ndarray) -> np.ndarray:
        if not surface.any():
            return np.full(int(sources.sum()), np.inf)
        # EDT of the complement: each voxel's distance (mm) to the nearest surface voxel.
        return ndimage.distance_transform_edt(~surface, sampling=sampling)[sources]

    return to(target_surface, pred_surface), to(pred_surface, target_surface)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> float | None:
    """95th-percentile Hausdorff distance in mm; ``None`` when either mask is empty.

    The maximum of the two directed 95th percentiles (MONAI's
    ``compute_hausdorff_distance(percentile=95, directed=False)``; medpy's ``hd95`` pools the two
    sets and can read lower), linear interpolation between ranks.
    """
    to_target, to_pred = surface_distances(pred, target, spacing)
    if to_target.size == 0 or to_pred.size == 0:
        return None
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def case_scores(
    pred: np.ndarray,
    target: np.ndarray,
    classes: list[str],
    spacing: Sequence[float],
    ignore_index: int = 255,
) -> dict:
    """Dice and HD95 of each foreground class (index ≥ 1) of one case.

    Args:
        pred: predicted class map, ``S×H×W`` or ``H×W`` integers.
        target: label map of the same shape; ``ignore_index`` voxels are left out of both maps
            (the prediction there counts as "not this class").
        classes: class names, index order; index 0 is the background and is not scored.
        spacing: voxel size in mm per array axis.
        ignore_index: label value left out.

    Returns:
        ``{name: {"dice": float | None, "hd95": float | None}}``, plus ``"reason"`` (``"empty in
        label and prediction"``, ``"empty label"`` or ``"empty prediction"``) where a value is
        ``None``. Dice is 0.0 when exactly one of the two masks is empty.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    _spacing(spacing, pred.ndim)
    valid = target != ignore_index
    # As in the confusion matrix: an unknown label value is an error, never silently dropped.
    outside = valid & ((target < 0) | (target >= len(classes)))
    if outside.any():
        raise ValueError(
            f"label values {np.unique(target[outside])[:5].tolist()} are outside "
            f"the {len(classes)} classes"
        )
    scores = {}
    for index, name in enumerate(classes[1:], start=1):
        p = (pred == index) & valid
        t = target == index
        p_sum, t_sum = int(p.sum()), int(t.sum())
        entry: dict = {"dice": None, "hd95": None}
        if p_sum + t_sum == 0:
            entry["reason"] = EMPTY_BOTH
        else:
            entry["dice"] = 2.0 * int((p & t).sum()) / (p_sum + t_sum)
            if t_sum == 0 or p_sum == 0:
                entry["reason"] = EMPTY_LABEL if t_sum == 0 else EMPTY_PRED
            else:
                entry["hd95"] = hd95(p, t, spacing)
        scores[name] = entry
    return scores


def summarize_cases(per_case: dict[str, dict]) -> dict:
    """Mean ± sd of each class's Dice and HD95 over the cases where the value is defined.

    Args:
        per_case: ``{case_id: case_scores(...)}``.

    Returns:
        ``{name: {"dice": {"mean", "sd", "n"}, "hd95": {"mean", "sd", "n"}}}``. ``None`` values
        are skipped and ``n`` counts the others; ``mean`` is ``None`` when ``n == 0``. ``sd`` is
        the **sample** standard deviation (``ddof=1``, pandas' ``std``, R's ``sd``): the cases are
        a sample of patients and the sd describes the spread between them; ``ddof=0`` would make
        a single case read "sd 0". ``sd`` is ``None`` when ``n < 2``.
    """
    names: list[str] = []
    for scores in per_case.values():
        names += [name for name in scores if name not in names]
    summary = {}
    for name in names:
        summary[name] = {}
        for key in ("dice", "hd95"):
            values = [
                s[name][key]
                for s in per_case.values()
                if name in s and s[name].get(key) is not None
            ]
            n = len(values)
            summary[name][key] = {
                "mean": float(np.mean(values)) if n else None,
                "sd": float(np.std(values, ddof=1)) if n >= 2 else None,
                "n": n,
            }
    return summary
