"""``MultiTaskLoss``: one TaskLoss per task, combined with fixed or learned task weights."""

from __future__ import annotations

from functools import partial

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

    ``forward(logits, labels, has_label, labelled)`` returns ``(total, parts)`` where ``parts``
    holds ``"<task>"`` (the task's unweighted loss), ``"<task>/<term>"`` for every term and, with
    uncertainty weighting, ``"<task>/weight"`` (``exp(-s_t)``), all detached; ``skipped``, the
    tasks whose batch had no labelled sample (not computed); and ``nonfinite``, ``{task: 0-d bool
    tensor}``, true where the task's loss was NaN or infinite: such a task is left out of the
    total and its logits' gradients are zeroed, so one bad task never poisons the step.

    Nothing here reads a value back to the host: the non-finite check is a mask on the device,
    and ``labelled`` (``{task: labelled samples}``, the collated batch's ``"labelled"``, known on
    the host) says which tasks to skip. Without it, ``has_label`` is read back to find them.
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
        labelled: dict[str, int] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        if labelled is None and has_label is not None:
            labelled = {task: int(flags.sum()) for task, flags in has_label.items()}
        total = None
        parts: dict = {"skipped": [], "nonfinite": {}}
        for task, loss_fn in self.task_losses.items():
            if labelled is not None and not labelled[task]:
                parts["skipped"].append(task)
                continue
            task_logits = logits[task]
            loss, terms = loss_fn(
                task_logits, labels[task], None if has_label is None else has_label[task]
            )
            finite = torch.isfinite(loss)
            parts["nonfinite"][task] = ~finite
            if task_logits.requires_grad:
                # where() below gives the task's loss a zero gradient, which the softmax turns
                # into NaN at non-finite logits: zero those too.
                task_logits.register_hook(partial(_zero_unless, finite))
            parts[task] = loss.detach()
            parts |= {f"{task}/{name}": value.detach() for name, value in terms.items()}
            loss = torch.where(finite, loss, 0.0)
            if self.log_vars is not None:
                log_var = self.log_vars[task]
                parts[f"{task}/weight"] = torch.exp(-log_var.detach())
                loss = torch.exp(-log_var) * loss + 0.5 * log_var
            weighted = torch.where(finite, self.task_weights[task] * loss, 0.0)
            total = weighted if total is None else total + weighted
        if total is None:
            total = sum(x.sum() * 0.0 for x in logits.values())
        return total, parts


def _zero_unless(finite: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.where(finite, grad, 0.0)
