"""``MultiTaskLoss``: one TaskLoss per task, combined with fixed task weights."""

from __future__ import annotations

import torch
from torch import nn

from mmseg_heads.losses.task_loss import TaskLoss


class MultiTaskLoss(nn.Module):
    """Sum of ``task_weight * task_loss`` over tasks.

    ``forward(logits, labels, has_label)`` returns ``(total, parts)`` where ``parts`` holds
    ``"<task>"`` (the task's loss) and ``"<task>/<term>"`` for every term, detached, and
    ``skipped``, the tasks whose batch had no labelled sample. A non-finite task loss is left out
    of the total and reported in ``nonfinite`` by task name, so one bad task never poisons the step.
    """

    def __init__(
        self, task_losses: dict[str, TaskLoss], task_weights: dict[str, float] | None = None
    ):
        super().__init__()
        self.task_losses = nn.ModuleDict(task_losses)
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in task_losses}

    def forward(
        self,
        logits: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor],
        has_label: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        total = None
        parts: dict = {"skipped": [], "nonfinite": []}
        for task, loss_fn in self.task_losses.items():
            loss, terms = loss_fn(
                logits[task], labels[task], None if has_label is None else has_label[task]
            )
            if loss is None:
                parts["skipped"].append(task)
                continue
            if not torch.isfinite(loss):
                parts["nonfinite"].append(task)
                continue
            parts[task] = loss.detach()
            parts |= {f"{task}/{name}": value.detach() for name, value in terms.items()}
            weighted = self.task_weights[task] * loss
            total = weighted if total is None else total + weighted
        if total is None:
            total = sum(x.sum() * 0.0 for x in logits.values())
        return total, parts
