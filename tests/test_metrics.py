"""Confusion matrix and the scores computed from it (mmseg_heads.metrics)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_fbeta_score,
    multiclass_jaccard_index,
    multiclass_precision,
    multiclass_recall,
)

from mmseg_heads.metrics import functional as MF
from mmseg_heads.metrics.confusion import ConfusionMatrix

IGNORE = 255

# Hand-made 3-class example. Rows = truth, columns = prediction.
#   tp = [5, 3, 4], fp = column sums - tp = [2, 1, 1], fn = row sums - tp = [1, 3, 0]
MATRIX = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def _pixels_from_matrix(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) 1-D maps whose confusion matrix is ``matrix``."""
    preds, targets = [], []
    for truth in range(matrix.shape[0]):
        for guess in range(matrix.shape[1]):
            n = int(matrix[truth, guess])
            targets += [truth] * n
            preds += [guess] * n
    return torch.tensor(preds), torch.tensor(targets)


def _close(values: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64))


# --- confusion_matrix -------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3, 21])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_predicted_classes_are_argmax_including_ties(classes, dtype):
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(2, classes, 8, 8, generator=g).round().to(dtype)  # rounding makes ties
    logits[0, :, 0, 0] = 1.0  # every class tied: the first wins
    predicted = MF.predicted_classes(logits)
    assert predicted.dtype == torch.int64 and predicted.shape == (2, 8, 8)
    assert torch.equal(predicted, logits.argmax(1))
    assert predicted[0, 0, 0] == 0


def test_confusion_matrix_rows_are_truth_and_columns_predictions():
    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0])
    matrix = MF.confusion_matrix(pred, target, 3, IGNORE)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert matrix.dtype == torch.int64


def test_confusion_matrix_is_asymmetric_for_one_way_mistakes():
    # truth 0 predicted as 2 lands in row 0, column 2 (not row 2, column 0)
    matrix = MF.confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3, IGNORE)
    assert matrix[0, 2] == 1
    assert matrix.sum() == 1


def test_confusion_matrix_leaves_out_ignore_pixels():
    target = torch.tensor([[0, 1], [IGNORE, IGNORE]])
    pred = torch.tensor([[0, 0], [1, 2]])
    matrix = MF.confusion_matrix(pred, target, 3, IGNORE)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_confusion_matrix_of_the_hand_made_example_round_trips():
    pred, target = _pixels_from_matrix(MATRIX)
    assert torch.equal(MF.confusion_matrix(pred, target, 3, IGNORE), MATRIX)


def test_confusion_matrix_rejects_label_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[3\]"):
        MF.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3, IGNORE)


def test_confusion_matrix_without_the_range_check_counts_the_same():
    """The trainer's per-batch path skips the check (its cross-entropy made it): same counts."""
    pred, target = _pixels_from_matrix(MATRIX)
    target = target.clone()
    target[::5] = IGNORE
    checked = MF.confusion_matrix(pred, target, 3, IGNORE)
    assert torch.equal(MF.confusion_matrix(pred, target, 3, IGNORE, validate=False), checked)
    assert checked.sum() == (target != IGNORE).sum()


@pytest.mark.parametrize("classes", [2, 5, 19])
def test_confusion_matrix_by_sort_counts_what_bincount_counts(classes):
    """The CUDA default (a sort and searchsorted: no host sync) against the CPU's bincount,
    with classes that never occur and ignored pixels."""
    g = torch.Generator().manual_seed(classes)
    target = torch.randint(0, classes, (3, 17, 13), generator=g)
    pred = torch.randint(0, max(1, classes - 1), (3, 17, 13), generator=g)  # last never predicted
    target[1] = IGNORE
    by_sort = MF.confusion_matrix(pred, target, classes, IGNORE, method="sort")
    assert torch.equal(by_sort, MF.confusion_matrix(pred, target, classes, IGNORE))
    assert by_sort[:, -1].sum() == 0 and by_sort.sum() == (target != IGNORE).sum()
    with pytest.raises(ValueError, match="'bincount' or 'sort'"):
        MF.confusion_matrix(pred, target, classes, IGNORE, method="atomics")


def test_cross_entropy_rejects_what_the_skipped_check_would_have():
    logits = torch.zeros(1, 3, 1, 2)
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.functional.cross_entropy(logits, torch.tensor([[0, 3]]), ignore_index=IGNORE)


def test_confusion_matrix_rejects_negative_label():
    with pytest.raises(ValueError):
        MF.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, -1]), 3, IGNORE)


def test_confusion_matrix_all_ignored_is_all_zero():
    matrix = MF.confusion_matrix(torch.tensor([0, 1]), torch.tensor([IGNORE, IGNORE]), 2, IGNORE)
    assert matrix.tolist() == [[0, 0], [0, 0]]


# --- scores from counts ------------------------------------------------------------------------


def test_counts_of_the_hand_made_matrix():
    tp, fp, fn = MF.counts(MATRIX)
    assert tp.tolist() == [5, 3, 4]
    assert fp.tolist() == [2, 1, 1]
    assert fn.tolist() == [1, 3, 0]


def test_precision_recall_iou_dice_match_hand_computed():
    tp, fp, fn = MF.counts(MATRIX)
    _close(MF.precision(tp, fp), [5 / 7, 3 / 4, 4 / 5])
    _close(MF.recall(tp, fp, fn), [5 / 6, 3 / 6, 4 / 4])
    _close(MF.iou(tp, fp, fn), [5 / 8, 3 / 7, 4 / 5])
    _close(MF.dice(tp, fp, fn), [10 / 13, 6 / 10, 8 / 9])


def test_f1_matches_hand_computed():
    tp, fp, fn = MF.counts(MATRIX)
    _close(MF.fbeta(tp, fp, fn), [10 / 13, 6 / 10, 8 / 9])


def test_f2_weights_recall_over_precision():
    tp, fp, fn = MF.counts(MATRIX)
    # (1 + 4) tp / ((1 + 4) tp + 4 fn + fp)
    _close(MF.fbeta(tp, fp, fn, beta=2.0), [25 / 31, 15 / 28, 20 / 21])


def test_f_is_harmonic_mean_of_precision_and_recall():
    tp, fp, fn = MF.counts(MATRIX)
    p, r = MF.precision(tp, fp), MF.recall(tp, fp, fn)
    torch.testing.assert_close(MF.fbeta(tp, fp, fn), 2 * p * r / (p + r))


def test_score_with_zero_denominator_is_nan_not_zero():
    zero = torch.tensor([0])
    assert torch.isnan(MF.fbeta(zero, zero, zero)).all()
    assert torch.isnan(MF.iou(zero, zero, zero)).all()
    assert torch.isnan(MF.precision(zero, zero)).all()


def test_nanmean_skips_nan_and_returns_none_when_all_nan():
    assert MF.nanmean(torch.tensor([1.0, math.nan, 0.5])) == pytest.approx(0.75)
    assert MF.nanmean(torch.tensor([math.nan, math.nan])) is None


# --- summary ---------------------------------------------------------------------------------


def test_summary_of_hand_made_matrix():
    cm = ConfusionMatrix(["a", "b", "c"], IGNORE)
    cm.update(*_pixels_from_matrix(MATRIX))
    s = cm.summary()
    assert s["confusion_matrix"] == MATRIX.tolist()
    assert s["pixels"] == 16
    assert s["pixel_accuracy"] == pytest.approx(12 / 16)
    assert s["per_class"]["b"]["support"] == 6
    assert s["per_class"]["b"]["f"] == pytest.approx(0.6)
    assert s["macro_f"] == pytest.approx((10 / 13 + 6 / 10 + 8 / 9) / 3)
    assert s["macro_foreground_f"] == pytest.approx((6 / 10 + 8 / 9) / 2)
    assert s["macro_iou"] == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    # micro F of single-label multiclass = accuracy (sum fp = sum fn = errors)
    assert s["micro_f"] == pytest.approx(12 / 16)


def test_summary_beta_is_used_for_f():
    cm = ConfusionMatrix(["a", "b", "c"], IGNORE)
    cm.update(*_pixels_from_matrix(MATRIX))
    s = cm.summary(beta=2.0)
    assert s["beta"] == 2.0
    assert s["per_class"]["a"]["f"] == pytest.approx(25 / 31)
    assert s["per_class"]["a"]["dice"] == pytest.approx(10 / 13)


def test_summary_dice_means_by_hand_and_apart_from_f_at_beta_two():
    cm = ConfusionMatrix(["a", "b", "c"], IGNORE)
    cm.update(*_pixels_from_matrix(MATRIX))
    # Dice = 2 TP / (2 TP + FP + FN): a 10/13, b 6/10, c 8/9, whatever beta is.
    for beta in (1.0, 2.0):
        s = cm.summary(beta=beta)
        assert s["macro_dice"] == pytest.approx((10 / 13 + 6 / 10 + 8 / 9) / 3)
        assert s["macro_foreground_dice"] == pytest.approx((6 / 10 + 8 / 9) / 2)
        assert s["macro_foreground_iou"] == pytest.approx((3 / 7 + 4 / 5) / 2)
    assert cm.summary(beta=1.0)["macro_foreground_f"] == pytest.approx((6 / 10 + 8 / 9) / 2)
    # F-2 = 5 TP / (5 TP + 4 FN + FP): b 15/28, c 20/21; Dice stays F-1.
    s = cm.summary(beta=2.0)
    assert s["macro_foreground_f"] == pytest.approx((15 / 28 + 20 / 21) / 2)
    assert s["macro_foreground_dice"] != pytest.approx(s["macro_foreground_f"])
    assert s["macro_dice"] != pytest.approx(s["macro_f"])


def test_dice_means_skip_absent_classes_and_are_none_when_nothing_is_defined():
    cm = ConfusionMatrix(["bg", "x"], IGNORE)
    target = torch.zeros(4, dtype=torch.int64)
    cm.update(target.clone(), target)  # only background, predicted right: x is absent
    s = cm.summary()
    assert s["macro_dice"] == 1.0
    assert s["macro_foreground_dice"] is None
    assert s["macro_foreground_iou"] is None


def test_absent_class_has_none_scores_and_a_reason():
    cm = ConfusionMatrix(["bg", "x", "y"], IGNORE)
    target = torch.tensor([0, 0, 1, 1])
    cm.update(target.clone(), target)
    entry = cm.summary()["per_class"]["y"]
    assert entry["absent"] is True
    assert "absent" in entry["reason"]
    for key in ("precision", "recall", "f", "iou", "dice"):
        assert entry[key] is None
    assert cm.summary()["per_class"]["x"]["absent"] is False
    assert "reason" not in cm.summary()["per_class"]["x"]


def test_perfect_prediction_with_absent_class_has_macro_one():
    # bubbliiiing's per_class_iu gives the absent class 0 and a mIoU of 66.7 %
    cm = ConfusionMatrix(["bg", "x", "y"], IGNORE)
    target = torch.tensor([[0, 0, 1], [1, 0, IGNORE]])
    cm.update(target.clone(), target)
    s = cm.summary()
    assert s["macro_iou"] == 1.0
    assert s["macro_f"] == 1.0
    assert s["macro_foreground_f"] == 1.0


def test_all_background_prediction_gives_foreground_f_zero():
    # binary, 10 % foreground, the model predicts background everywhere
    target = torch.zeros(10, 10, dtype=torch.int64)
    target[0] = 1
    cm = ConfusionMatrix(["background", "foreground"], IGNORE)
    cm.update(torch.zeros_like(target), target)
    s = cm.summary()
    fg = s["per_class"]["foreground"]
    assert (fg["tp"], fg["fp"], fg["fn"]) == (0, 0, 10)
    assert fg["f"] == 0.0
    assert fg["recall"] == 0.0
    assert fg["precision"] is None
    assert s["macro_foreground_f"] == 0.0
    assert s["per_class"]["background"]["f"] == pytest.approx(180 / 190)
    assert s["macro_f"] == pytest.approx(180 / 190 / 2)


def test_correct_argmax_below_one_half_counts_as_true_positive():
    probs = torch.tensor(
        [
            [0.45, 0.30, 0.25],  # truth 0, top prob only 0.45
            [0.20, 0.40, 0.40 - 1e-3],  # truth 1, top prob 0.4
            [0.35, 0.33, 0.32],  # truth 2, wrong
        ]
    )
    logits = probs.log()  # softmax(log p) = p / sum p
    torch.testing.assert_close(logits.softmax(-1), probs / probs.sum(-1, keepdim=True))
    logits = logits.T.reshape(1, 3, 1, 3)  # N×C×H×W
    target = torch.tensor([[[0, 1, 2]]])
    cm = ConfusionMatrix(["a", "b", "c"], IGNORE)
    cm.update(logits.argmax(1), target)
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    s = cm.summary()
    assert s["per_class"]["a"]["tp"] == 1
    assert s["per_class"]["b"]["tp"] == 1
    assert s["per_class"]["b"]["f"] == 1.0


def test_class_predicted_but_absent_from_labels_counts_false_positives():
    cm = ConfusionMatrix(["bg", "x"], IGNORE)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]))
    x = cm.summary()["per_class"]["x"]
    assert (x["tp"], x["fp"], x["fn"]) == (0, 2, 0)
    assert x["absent"] is False
    assert x["precision"] == 0.0
    assert x["recall"] is None
    assert x["f"] == 0.0
    assert x["iou"] == 0.0


def test_update_returns_the_batch_matrix_and_accumulates():
    cm = ConfusionMatrix(["a", "b"], IGNORE)
    first = cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    second = cm.update(torch.tensor([1]), torch.tensor([1]))
    assert first.tolist() == [[1, 1], [0, 0]]
    assert second.tolist() == [[0, 0], [0, 1]]
    assert cm.matrix.tolist() == [[1, 1], [0, 1]]


def test_merge_equals_one_matrix_updated_with_both_halves():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, 0] = IGNORE
    pred = torch.randint(0, 4, (2, 8, 8), generator=g)
    classes = ["a", "b", "c", "d"]
    a, b, whole = (ConfusionMatrix(classes, IGNORE) for _ in range(3))
    a.update(pred[0], target[0])
    b.update(pred[1], target[1])
    whole.update(pred, target)
    merged = a + b
    assert torch.equal(merged.matrix, whole.matrix)
    assert merged.classes == classes
    # merging makes a new matrix and leaves the operands alone
    assert a.matrix.sum() + b.matrix.sum() == merged.matrix.sum()
    assert merged is not a and merged.matrix is not a.matrix


# --- torchmetrics cross-check --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_scores_match_torchmetrics(seed):
    num_classes = 4
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (2, 16, 16), generator=g)
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.6,
        target,
        torch.randint(0, num_classes, target.shape, generator=g),
    )
    target[:, :2] = IGNORE
    assert set(target[target != IGNORE].unique().tolist()) == set(range(num_classes))
    tp, fp, fn = MF.counts(MF.confusion_matrix(pred, target, num_classes, IGNORE))
    kw = {"num_classes": num_classes, "average": None, "ignore_index": IGNORE}
    ours_and_theirs = [
        (MF.fbeta(tp, fp, fn), multiclass_f1_score(pred, target, **kw)),
        (MF.fbeta(tp, fp, fn, beta=2.0), multiclass_fbeta_score(pred, target, beta=2.0, **kw)),
        (MF.fbeta(tp, fp, fn, beta=0.5), multiclass_fbeta_score(pred, target, beta=0.5, **kw)),
        (MF.precision(tp, fp), multiclass_precision(pred, target, **kw)),
        (MF.recall(tp, fp, fn), multiclass_recall(pred, target, **kw)),
        (MF.iou(tp, fp, fn), multiclass_jaccard_index(pred, target, **kw)),
    ]
    for ours, theirs in ours_and_theirs:
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-5, atol=1e-6)


# --- properties --------------------------------------------------------------------------------


@st.composite
def label_maps(draw):
    """(num_classes, pred, target) with some ignore pixels in target."""
    num_classes = draw(st.integers(2, 5))
    n = draw(st.integers(1, 40))
    target = draw(
        st.lists(
            st.one_of(st.integers(0, num_classes - 1), st.just(IGNORE)), min_size=n, max_size=n
        )
    )
    pred = draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    return num_classes, torch.tensor(pred), torch.tensor(target)


PROPERTY = settings(max_examples=50, deadline=None)


@PROPERTY
@given(label_maps())
def test_matrix_sums_to_the_number_of_non_ignored_pixels(case):
    num_classes, pred, target = case
    matrix = MF.confusion_matrix(pred, target, num_classes, IGNORE)
    assert int(matrix.sum()) == int((target != IGNORE).sum())
    assert matrix.shape == (num_classes, num_classes)


@PROPERTY
@given(label_maps(), st.data())
def test_merging_two_halves_equals_the_whole(case, data):
    num_classes, pred, target = case
    cut = data.draw(st.integers(0, len(target)))
    classes = [str(i) for i in range(num_classes)]
    a, b, whole = (ConfusionMatrix(classes, IGNORE) for _ in range(3))
    a.update(pred[:cut], target[:cut])
    b.update(pred[cut:], target[cut:])
    whole.update(pred, target)
    assert torch.equal((a + b).matrix, whole.matrix)


@PROPERTY
@given(label_maps(), st.data())
def test_fbeta_per_class_is_invariant_to_class_order(case, data):
    num_classes, pred, target = case
    perm = torch.tensor(data.draw(st.permutations(list(range(num_classes)))))
    beta = data.draw(st.sampled_from([0.5, 1.0, 2.0]))
    valid = target != IGNORE
    permuted_target = torch.where(valid, perm[torch.where(valid, target, 0)], IGNORE)
    permuted_pred = perm[pred]
    f = MF.fbeta(*MF.counts(MF.confusion_matrix(pred, target, num_classes, IGNORE)), beta=beta)
    pf = MF.fbeta(
        *MF.counts(MF.confusion_matrix(permuted_pred, permuted_target, num_classes, IGNORE)),
        beta=beta,
    )
    # class c is called perm[c] after the permutation
    torch.testing.assert_close(pf[perm], f, equal_nan=True)


@PROPERTY
@given(label_maps())
def test_perfect_prediction_scores_one_for_every_present_class(case):
    num_classes, _, target = case
    pred = torch.where(target == IGNORE, 0, target)
    cm = ConfusionMatrix([str(i) for i in range(num_classes)], IGNORE)
    cm.update(pred, target)
    present = set(target[target != IGNORE].tolist())
    for c, entry in cm.summary()["per_class"].items():
        if int(c) in present:
            assert entry["f"] == 1.0 and entry["iou"] == 1.0 and entry["absent"] is False
        else:
            assert entry["f"] is None and entry["absent"] is True
