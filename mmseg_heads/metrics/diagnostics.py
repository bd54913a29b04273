"""Per-batch TP/FP/FN as the seed's notes read them, and warnings when a task goes wrong.

The usual training log prints TP, FP and FN per batch; "FN = 0 in every batch" then reads as good
news when it means the model over-predicts. :class:`BatchDiagnostics` keeps the counts (over the
foreground classes) and warns, naming the task, when for ``patience`` consecutive batches FN = 0
while FP > TP ("over-predicting") or TP = 0 while there is foreground ("collapsed to background").
"""

from __future__ import annotations


class BatchDiagnostics:
    """Watches per-batch foreground counts of each task.

    Args:
        patience: consecutive batches a condition must hold before it is reported.
    """

    OVER = "over-predicting: FN = 0 but FP > TP for {n} batches in a row"
    COLLAPSED = (
        "collapsed to background: TP = 0 although labels have foreground, {n} batches in a row"
    )

    def __init__(self, patience: int = 5):
        self.patience = patience
        self._streak: dict[tuple[str, str], int] = {}

    def update(self, task: str, counts: dict[str, int]) -> list[str]:
        """Record one batch of ``task``; returns the warnings that start with this batch."""
        conditions = {
            self.OVER: counts["fn"] == 0 and counts["fp"] > counts["tp"],
            self.COLLAPSED: counts["tp"] == 0 and counts["fn"] > 0,
        }
        warnings = []
        for message, holds in conditions.items():
            key = (task, message)
            self._streak[key] = self._streak.get(key, 0) + 1 if holds else 0
            if self._streak[key] == self.patience:  # once per streak, not every batch after
                warnings.append(f"task {task!r} {message.format(n=self.patience)}")
        return warnings
