"""Per-case Dice and HD95 in mm (mmseg_heads.metrics.per_case), against values worked by hand
and a brute-force pairwise-distance reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmseg_heads.metrics.per_case import (
    case_scores,
    hd95,
    summarize_cases,
    surface_distances,
)

CLASSES = ["background", "lesion"]


def square(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


# Two 5×5 squares (rows and columns 2..6), the target shifted by 2 pixels.
#
# Shift along columns, spacing (1, 1): of the 16 ring voxels of pred, 6 lie at 0 from the target's
# ring, 4 at 1 and 6 at 2 (symmetrically the other way) -> 95th percentile 2.
# Same shift, spacing (2, 0.5): 6 at 0, 2 at 0.5 mm, 8 at 1.0 mm -> 1.0 mm (2 columns × 0.5 mm).
# Shift along rows, spacing (2, 0.5): 6 at 0, 2 at 0.5, 1 at 1.0, 2 at 2.0, 5 at 4.0 mm -> 4.0 mm.
@pytest.mark.parametrize(
    ("shift_axis", "spacing", "expected"),
    [(1, (1.0, 1.0), 2.0), (1, (2.0, 0.5), 1.0), (0, (2.0, 0.5), 4.0), (0, (1.0, 1.0), 2.0)],
)
def test_hd95_of_shifted_squares(shift_axis, spacing, expected):
    pred = square((10, 10), (2, 6), (2, 6))
    target = np.roll(pred, 2, axis=shift_axis)
    assert hd95(pred, target, spacing) == pytest.approx(expected)
    assert hd95(target, pred, spacing) == pytest.approx(expected)


def test_hd95_interpolates_between_ranks():
    # A line of 10 pixels; the target adds one pixel 10 rows below the line's first pixel.
    # target->pred: 10 zeros and one 10 -> 95th percentile at rank 9.5 = 5 (spacing 1) and
    # 10 (rows of 2 mm); pred->target: all 0. The plain Hausdorff distance would be 10 / 20 mm.
    pred = np.zeros((11, 10), dtype=bool)
    pred[0] = True
    target = pred.copy()
    target[10, 0] = True
    assert hd95(pred, target, (1.0, 1.0)) == pytest.approx(5.0)
    assert hd95(pred, target, (2.0, 0.5)) == pytest.approx(10.0)
    # medpy's hd95 pools both sets: 20 zeros and one 10, rank 19 -> 0. The max of the two
    # directed percentiles (MONAI, here) does not let pred's 10 near voxels hide the far one.
    pooled = np.concatenate(surface_distances(pred, target, (1.0, 1.0)))
    assert np.percentile(pooled, 95) == 0.0


def test_hd95_3d_one_slice_shift_is_one_slice_thickness():
    # 3×5×5 boxes, 5 mm slices, the target one slice higher. Of pred's 66 surface voxels, 25 (the
    # bottom face) lie 5 mm from the target's surface, 32 at 0, 8 at 1 mm and 1 at 2 mm: the 95th
    # percentile (rank 61.75 of 0..65) is 5 mm, both ways.
    pred = np.zeros((8, 9, 9), dtype=bool)
    pred[2:5, 2:7, 2:7] = True
    target = np.roll(pred, 1, axis=0)
    to_target, to_pred = surface_distances(pred, target, (5.0, 1.0, 1.0))
    assert to_target.size == to_pred.size == 66
    assert np.sort(to_target).tolist() == [0.0] * 32 + [1.0] * 8 + [2.0] + [5.0] * 25
    assert hd95(pred, target, (5.0, 1.0, 1.0)) == pytest.approx(5.0)


def test_single_voxels_at_a_known_distance():
    pred = np.zeros((6, 6, 6), dtype=bool)
    target = np.zeros_like(pred)
    pred[1, 2, 1] = True
    target[4, 2, 3] = True  # 3 voxels × 1 mm and 2 voxels × 2 mm apart: sqrt(9 + 16) = 5
    to_target, to_pred = surface_distances(pred, target, (1.0, 1.0, 2.0))
    assert to_target.tolist() == [pytest.approx(5.0)]
    assert to_pred.tolist() == [pytest.approx(5.0)]
    assert hd95(pred, target, (1.0, 1.0, 2.0)) == pytest.approx(5.0)


def test_masks_touching_the_border_have_a_surface_there():
    # A mask filling a 3×4 array: its 10 border voxels are surface (the field of view ends there),
    # the 2 inner ones are not. Against the same mask minus its last column, pred's last column
    # (3 voxels) lies 1.5 mm from the target's surface: 3 of 10 at 1.5 -> 95th percentile 1.5.
    # The other way, the target's (1, 2) is inside pred, 1 mm from its top row: 7 × 0 and one 1.0
    # -> 95th percentile 0.65; the larger of the two is 1.5.
    full = np.ones((3, 4), dtype=bool)
    to_target, to_pred = surface_distances(full, full, (1.0, 1.0))
    assert to_target.size == to_pred.size == 10
    assert hd95(full, full, (1.0, 1.0)) == 0.0
    cut = full.copy()
    cut[:, 3] = False
    to_target, to_pred = surface_distances(full, cut, (1.0, 1.5))
    assert np.sort(to_target).tolist() == [0.0] * 7 + [1.5] * 3
    assert np.sort(to_pred).tolist() == [0.0] * 7 + [1.0]
    assert hd95(full, cut, (1.0, 1.5)) == pytest.approx(1.5)


def test_dice_of_hand_made_volumes():
    target = np.zeros((4, 4, 4), dtype=np.int64)
    pred = np.zeros_like(target)
    pred[1:3, 1:3, 1:3] = 1  # 8 voxels
    target[1:3, 1:3, 1] = 1  # 4 voxels, all inside pred
    scores = case_scores(pred, target, CLASSES, (1.0, 1.0, 1.0))
    assert list(scores) == ["lesion"]  # the background is not scored
    assert scores["lesion"]["dice"] == pytest.approx(2 * 4 / 12)
    # Every pred surface voxel is 0 or 1 mm from the target's surface (the 2×2×1 slab is all
    # surface and lies inside pred's bottom half), and vice versa.
    assert scores["lesion"]["hd95"] == pytest.approx(1.0)
    assert "reason" not in scores["lesion"]


def test_empty_label_prediction_or_both():
    classes = ["background", "a", "b", "c"]
    target = np.zeros((6, 6), dtype=np.int64)
    pred = np.zeros_like(target)
    pred[1:3, 1:3] = 1  # a: predicted, absent from the label
    target[3:5, 3:5] = 2  # b: in the label, never predicted
    # c: in neither
    scores = case_scores(pred, target, classes, (1.0, 1.0))
    assert scores["a"] == {"dice": 0.0, "hd95": None, "reason": "empty label"}
    assert scores["b"] == {"dice": 0.0, "hd95": None, "reason": "empty prediction"}
    assert scores["c"] == {"dice": None, "hd95": None, "reason": "empty in label and prediction"}
    assert hd95(pred == 1, target == 1, (1.0, 1.0)) is None


def test_ignored_voxels_leave_dice_and_hd95():
    target = np.zeros((12, 12), dtype=np.int64)
    target[2:5, 2:5] = 1
    target[:, 10:] = 255  # e.g. padding or an unlabelled region
    pred = np.zeros_like(target)
    pred[2:5, 2:5] = 1
    pred[0:6, 10:] = 1  # predicted lesion inside the ignored region: neither FP nor a far surface
    scores = case_scores(pred, target, CLASSES, (1.0, 1.0))
    assert scores["lesion"] == {"dice": 1.0, "hd95": 0.0}
    # Without the ignore label the same prediction is penalised.
    target[:, 10:] = 0
    scores = case_scores(pred, target, CLASSES, (1.0, 1.0))
    assert scores["lesion"]["dice"] == pytest.approx(2 * 9 / (21 + 9))
    assert scores["lesion"]["hd95"] > 5.0


def test_bad_inputs_are_errors():
    mask = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="spacing"):
        case_scores(mask, mask, CLASSES, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(mask == 0, mask == 0, (1.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        hd95(mask == 0, np.ones((4, 5), dtype=bool), (1.0, 1.0))
    bad = mask.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        case_scores(mask, bad, CLASSES, (1.0, 1.0))


def test_summarize_cases_mean_sd_n():
    per_case = {
        "case1": {"a": {"dice": 0.5, "hd95": 2.0}, "b": {"dice": 0.8, "hd95": 1.0}},
        "case2": {
            "a": {"dice": 1.0, "hd95": None, "reason": "empty prediction"},
            "b": {"dice": None, "hd95": None, "reason": "empty in label and prediction"},
        },
        "case3": {
            "a": {"dice": 0.0, "hd95": 4.0},
            "b": {"dice": None, "hd95": None, "reason": "empty in label and prediction"},
        },
    }
    summary = summarize_cases(per_case)
    # a: Dice 0.5, 1.0, 0.0 -> mean 0.5, sample sd sqrt((0 + 0.25 + 0.25) / 2) = 0.5;
    #    HD95 2, 4 (case2 skipped) -> mean 3, sd sqrt((1 + 1) / 1) = sqrt(2).
    assert summary["a"]["dice"] == {"mean": pytest.approx(0.5), "sd": pytest.approx(0.5), "n": 3}
    assert summary["a"]["hd95"] == {
        "mean": pytest.approx(3.0),
        "sd": pytest.approx(math.sqrt(2)),
        "n": 2,
    }
    # b: one defined case -> no sd.
    assert summary["b"]["dice"] == {"mean": pytest.approx(0.8), "sd": None, "n": 1}
    assert summary["b"]["hd95"] == {"mean": pytest.approx(1.0), "sd": None, "n": 1}
    empty = summarize_cases({"case1": {"c": {"dice": None, "hd95": None, "reason": "x"}}})
    assert empty["c"]["dice"] == {"mean": None, "sd": None, "n": 0}


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by definition: in the mask with a face neighbour outside it or the array."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = np.ones_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            interior &= np.roll(padded, step, axis=axis)[inner]
    return mask & ~interior


def _brute_hd95(pred: np.ndarray, target: np.ndarray, spacing) -> tuple[float, np.ndarray]:
    p = np.argwhere(_brute_surface(pred)) * np.asarray(spacing)
    t = np.argwhere(_brute_surface(target)) * np.asarray(spacing)
    pairwise = np.sqrt(((p[:, None, :] - t[None, :, :]) ** 2).sum(-1))
    to_target, to_pred = pairwise.min(1), pairwise.min(0)
    return max(np.percentile(to_target, 95), np.percentile(to_pred, 95)), to_target


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((13, 17), (0.7, 1.9)), ((7, 9, 11), (3.0, 0.8, 1.25)), ((5, 6, 4), (1.0, 1.0, 1.0))],
)
def test_hd95_matches_brute_force_on_random_masks(shape, spacing):
    rng = np.random.default_rng(0)
    for trial in range(20):
        density = (0.1, 0.4, 0.7)[trial % 3]
        pred = rng.random(shape) < density
        target = rng.random(shape) < density
        if not pred.any() or not target.any():
            continue
        expected, expected_to_target = _brute_hd95(pred, target, spacing)
        to_target, _ = surface_distances(pred, target, spacing)
        # Both list pred's surface voxels in np.nonzero (C) order.
        np.testing.assert_allclose(to_target, expected_to_target, rtol=0, atol=1e-6)
        assert hd95(pred, target, spacing) == pytest.approx(expected, abs=1e-6)
