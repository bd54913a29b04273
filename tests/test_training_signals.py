"""Learned task weights, per-batch diagnostics and cross-process metric merging."""

from __future__ import annotations

import torch
import torch.distributed as dist

from mmseg_heads.losses.multitask import MultiTaskLoss
from mmseg_heads.losses.task_loss import TaskLoss
from mmseg_heads.metrics.confusion import ConfusionMatrix
from mmseg_heads.metrics.diagnostics import BatchDiagnostics
from mmseg_heads.metrics.functional import confusion_matrix, foreground_tp_fp_fn


def test_uncertainty_weighting_learns_a_lower_weight_for_a_10x_noisier_task():
    """Two tasks fit by free logits; task `noisy` has 10× more flipped labels than `clean`."""
    torch.manual_seed(0)
    n, size = 8, 16
    truth = torch.randint(0, 2, (n, size, size))

    def flipped(rate: float) -> torch.Tensor:
        flip = torch.rand(truth.shape) < rate
        return torch.where(flip, 1 - truth, truth)

    labels = {"clean": flipped(0.04), "noisy": flipped(0.4)}
    criterion = MultiTaskLoss(
        {t: TaskLoss({"ce": {"weight": 1.0}}, ignore_index=255) for t in labels},
        weighting="uncertainty",
    )
    # The logits see the truth only through a shared feature, so neither task can memorise noise.
    feature = (truth.float() * 2 - 1).unsqueeze(1)
    scales = {t: torch.zeros(2, requires_grad=True) for t in labels}
    optimizer = torch.optim.Adam([*scales.values(), *criterion.parameters()], lr=0.05)
    for _ in range(300):
        outputs = {
            t: torch.cat([-feature, feature], 1) * scales[t].view(1, 2, 1, 1) for t in labels
        }
        loss, parts = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = criterion.learned_weights()
    assert weights["clean"] > 2 * weights["noisy"], weights
    # parts carry the weight used in the last step (before its update): close to the final one.
    assert abs(float(parts["noisy/weight"]) - weights["noisy"]) < 0.05


def test_fixed_weighting_has_no_learned_parameters():
    criterion = MultiTaskLoss({"a": TaskLoss({"ce": {"weight": 1.0}}, ignore_index=255)})
    assert list(criterion.parameters()) == [] and criterion.learned_weights() == {}


def test_foreground_counts_sum_the_foreground_classes():
    # matrix [[10, 2, 1], [3, 5, 0], [0, 1, 7]] (rows truth): TP = 5 + 7; FP = column sums minus
    # TP of classes 1, 2 = (8-5) + (8-7); FN = row sums minus TP = (8-5) + (8-7)
    matrix = [[10, 2, 1], [3, 5, 0], [0, 1, 7]]
    pairs = [(t, p) for t, row in enumerate(matrix) for p, n in enumerate(row) for _ in range(n)]
    target, pred = (torch.tensor(x).view(1, 1, -1) for x in zip(*pairs, strict=True))
    target = torch.cat([target, torch.full((1, 1, 5), 255)], dim=2)  # ignored: never counted
    pred = torch.cat([pred, torch.ones(1, 1, 5, dtype=torch.long)], dim=2)
    assert confusion_matrix(pred, target, 3, 255).tolist() == matrix
    assert foreground_tp_fp_fn(pred, target, 255).tolist() == [12, 4, 4]


def test_foreground_counts_equal_the_confusion_matrix_on_random_maps():
    g = torch.Generator().manual_seed(3)
    for classes in (2, 3, 7):
        pred = torch.randint(0, classes, (2, 9, 11), generator=g)
        target = torch.randint(0, classes, (2, 9, 11), generator=g)
        target[0, :2] = 255
        matrix = confusion_matrix(pred, target, classes, 255)
        tp, fp, fn = matrix.diagonal(), matrix.sum(0) - matrix.diagonal(), matrix.sum(1)
        fn = fn - matrix.diagonal()
        expected = [int(tp[1:].sum()), int(fp[1:].sum()), int(fn[1:].sum())]
        assert foreground_tp_fp_fn(pred, target, 255).tolist() == expected


def test_diagnostics_warn_once_per_streak_naming_the_task():
    diagnostics = BatchDiagnostics(patience=3)
    over = {"tp": 5, "fp": 50, "fn": 0}
    warnings = [diagnostics.update("scar", over) for _ in range(5)]
    assert [len(w) for w in warnings] == [0, 0, 1, 0, 0]
    assert "task 'scar' over-predicting" in warnings[2][0]
    diagnostics.update("scar", {"tp": 5, "fp": 1, "fn": 1})  # recovers: the streak resets
    assert [len(diagnostics.update("scar", over)) for _ in range(3)] == [0, 0, 1]
    collapsed = [diagnostics.update("edema", {"tp": 0, "fp": 0, "fn": 30}) for _ in range(3)]
    assert "task 'edema' collapsed to background" in collapsed[2][0]
    healthy = [diagnostics.update("anatomy", {"tp": 40, "fp": 3, "fn": 2}) for _ in range(10)]
    assert not any(healthy)


def test_confusion_matrix_all_reduce_sums_over_ranks(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        matrix = ConfusionMatrix(["bg", "fg"], ignore_index=255)
        matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
        assert matrix.all_reduce().matrix.tolist() == [[1, 1], [0, 1]]
    finally:
        dist.destroy_process_group()
    lonely = ConfusionMatrix(["bg", "fg"], ignore_index=255)
    assert lonely.all_reduce() is lonely  # no process group: a no-op
