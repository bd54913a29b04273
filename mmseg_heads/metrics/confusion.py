"""``ConfusionMatrix``: a streaming, mergeable confusion matrix for one task, and its report."""

from __future__ import annotations

import math

import torch

from mmseg_heads.metrics import functional as MF


class ConfusionMatrix:
    """Accumulates counts on the device of the predictions; ``+`` merges two of them.

    Args:
        classes: class names, index order.
        ignore_index: label value left out.
    """

    def __init__(self, classes: list[str], ignore_index: int, device: torch.device | str = "cpu"):
        self.classes = list(classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(len(classes), len(classes), dtype=torch.int64, device=device)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add a batch of predicted and true index maps; returns this batch's matrix."""
        batch = MF.confusion_matrix(
            pred.to(self.matrix.device),
            target.to(self.matrix.device),
            self.num_classes,
            self.ignore_index,
        )
        self.matrix += batch
        return batch

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        merged = ConfusionMatrix(self.classes, self.ignore_index, self.matrix.device)
        merged.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return merged

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over every DDP rank in place (a no-op outside torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def summary(self, beta: float = 1.0) -> dict:
        """Per-class and averaged scores; undefined scores are ``None`` and absent classes flagged."""
        return summarize(self.matrix.cpu(), self.classes, beta)


def _value(x: float) -> float | None:
    return None if math.isnan(x) else x


def summarize(matrix: torch.Tensor, classes: list[str], beta: float = 1.0) -> dict:
    tp, fp, fn = MF.counts(matrix)
    scores = {
        "precision": MF.precision(tp, fp),
        "recall": MF.recall(tp, fp, fn),
        "f": MF.fbeta(tp, fp, fn, beta),
        "iou": MF.iou(tp, fp, fn),
        "dice": MF.dice(tp, fp, fn),
    }
    per_class = {}
    for i, name in enumerate(classes):
        absent = int(tp[i] + fp[i] + fn[i]) == 0
        entry = {
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "fn": int(fn[i]),
            "support": int(tp[i] + fn[i]),
        }
        entry |= {k: _value(float(v[i])) for k, v in scores.items()}
        entry["absent"] = absent
        if absent:
            entry["reason"] = "absent from labels and predictions"
        per_class[name] = entry
    total = int(matrix.sum())
    micro = MF.fbeta(tp.sum(), fp.sum(), fn.sum(), beta)
    return {
        "classes": list(classes),
        "beta": beta,
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
        "macro_foreground_f": MF.nanmean(scores["f"][1:]),
        "macro_f": MF.nanmean(scores["f"]),
        "macro_iou": MF.nanmean(scores["iou"]),
        "macro_foreground_iou": MF.nanmean(scores["iou"][1:]),
        # Dice is F-1 whatever ``beta`` is: the same number as the F means only at beta = 1.
        "macro_dice": MF.nanmean(scores["dice"]),
        "macro_foreground_dice": MF.nanmean(scores["dice"][1:]),
        "micro_f": _value(float(micro)),
        "pixel_accuracy": float(tp.sum()) / total if total else None,
        "pixels": total,
    }
