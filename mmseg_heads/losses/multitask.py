"""``MultiTaskLoss``: one TaskLoss per task, combined with fixed or learned task weights."""

from __future__ import annotations

import torch
from torch import nn

from mmseg_heads.losses.task_loss import TaskLoss

WEIGHTINGS = ("fixed", "uncertainty")


class MultiTaskLoss(nn.Module):
    """Combine the tasks' losses.

    ``weighting="fixed"``: ``sum_t w_t * L_t`` with ``task_weights`` (default 1).
    ``weighting="uncertainty"``: Kendall, Gal & Cipolla (2018), for classification tasks:
    ``sum_t w_t * (exp(-s_t) * L_t + s_t / 2)`` with a learned log-variance ``s_t`` per task
    (initialised to 0), so a task whose loss stays high (noisy labels) is weighted down.

    ``forward(logits, labels, has_label)`` returns ``(total, parts)`` where ``parts`` holds
    ``"<task>"`` (the task's unweighted loss), ``"<task>/<term>"`` for every term and, with
    uncertainty weighting, ``"<task>/weight"`` (``exp(-s_t)``), all detached; ``skipped``, the
    tasks whose batch had no labelled sample; and ``nonfinite``, the tasks whose loss was NaN or
    infinite: they are left out of the total, so one bad task never poisons the step.
    """

    def __init__(
        self,
        task_losses: dict[str, TaskLoss],
        task_weights: dict[str, float] | None = None,
        weighting: str = "fixed",
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.task_losses = nn.ModuleDict(task_losses)
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in task_losses}
        self.log_vars = (
            nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in task_losses})
            if weighting == "uncertainty"
            else None
        )

    def learned_weights(self) -> dict[str, float]:
        """``{task: exp(-s_t)}`` under uncertainty weighting, else ``{}``."""
        if self.log_vars is None:
            return {}
        return {t: float(torch.exp(-s.detach())) for t, s in self.log_vars.items()}

    def forward(
        self,
        logits: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor],
        has_label: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        total = None
        parts: dict = {"skipped": [], "nonfinite": []}
        for task, loss_fn in self.task_losses.items():
            mask = None if has_label is None else has_label[task]
            loss, terms = loss_fn(logits[task], labels[task], mask)
            if loss is None:
                parts["skipped"].append(task)
                continue
            if not torch.isfinite(loss):
                parts["nonfinite"].append(task)
                continue
            parts[task] = loss.detach()
            parts |= {f"{task}/{name}": value.detach() for name, value in terms.items()}
            if self.log_vars is not None:
                log_var = self.log_vars[task]
                parts[f"{task}/weight"] = torch.exp(-log_var.detach())
                loss = torch.exp(-log_var) * loss + 0.5 * log_var
            weighted = self.task_weights[task] * loss
            total = weighted if total is None else total + weighted
        if total is None:
            total = sum(x.sum() * 0.0 for x in logits.values())
        return total, parts
