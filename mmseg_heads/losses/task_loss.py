"""``TaskLoss``: one task's weighted sum of loss terms, on the samples that have its label.

Terms are registered by name in :data:`LOSS_TERMS`; each is built from its config options
(``weight`` is taken out first) and called as ``term(log_probs, target)``: ``TaskLoss`` takes
the ``log_softmax`` of the logits once and every term reads it (no term repeats the softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmseg_heads.losses import functional as LF
from mmseg_heads.registry import Registry
from mmseg_heads.schema import Field, ListOf, Node, OneOf

#: name -> term class. A term declares ``doc`` (one line) and ``options`` (schema nodes of its
#: config options besides ``weight``): the config schema and config.md are built from them.
LOSS_TERMS: Registry[type[nn.Module]] = Registry("loss term")


@LOSS_TERMS.register("ce")
class CrossEntropyTerm(nn.Module):
    doc = "cross-entropy: a weight, or {weight, class_weights, label_smoothing}"
    options: dict[str, Node] = {
        "class_weights": ListOf(
            Field(float, minimum=0.0), default=None, doc="one weight per class"
        ),
        "label_smoothing": Field(float, default=0.0, minimum=0.0, maximum=1.0),
    }

    def __init__(
        self,
        *,
        ignore_index: int,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, log_probs, target):
        return LF.cross_entropy(
            log_probs,
            target,
            ignore_index=self.ignore_index,
            class_weights=self.class_weights,
            label_smoothing=self.label_smoothing,
            log_probs=True,
        )


@LOSS_TERMS.register("focal")
class FocalTerm(nn.Module):
    doc = "focal loss: a weight, or {weight, gamma, alpha}"
    options: dict[str, Node] = {
        "gamma": Field(float, default=2.0, minimum=0.0),
        "alpha": OneOf(
            [Field(float), ListOf(Field(float))], default=None, doc="scalar or one per class"
        ),
    }

    def __init__(
        self, *, ignore_index: int, gamma: float = 2.0, alpha: float | list[float] | None = None
    ):
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.scalar_alpha = alpha if isinstance(alpha, (int, float)) else None
        per_class = torch.tensor(alpha, dtype=torch.float32) if isinstance(alpha, list) else None
        self.register_buffer("class_alpha", per_class, persistent=False)

    def forward(self, log_probs, target):
        alpha = self.class_alpha if self.class_alpha is not None else self.scalar_alpha
        return LF.focal(
            log_probs,
            target,
            ignore_index=self.ignore_index,
            gamma=self.gamma,
            alpha=alpha,
            log_probs=True,
        )


@LOSS_TERMS.register("dice")
class DiceTerm(nn.Module):
    doc = "soft Dice over classes present in the target: a weight, or {weight, smooth, per_sample}"
    options: dict[str, Node] = {
        "smooth": Field(float, default=1.0, minimum=0.0),
        "per_sample": Field(bool, default=False),
    }

    def __init__(self, *, ignore_index: int, smooth: float = 1.0, per_sample: bool = False):
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth
        self.per_sample = per_sample

    def forward(self, log_probs, target):
        return LF.soft_dice(
            log_probs,
            target,
            ignore_index=self.ignore_index,
            smooth=self.smooth,
            per_sample=self.per_sample,
            log_probs=True,
        )


class TaskLoss(nn.Module):
    """Weighted sum of loss terms for one task.

    Args:
        terms: ``{term name: {"weight": w, **options}}``, e.g. ``{"ce": {"weight": 1.0}}``.
        ignore_index: label value excluded from every term.

    ``forward(logits, target, has_label)`` returns ``(total, {term: value})``; only samples with
    ``has_label`` count: the others' labels are set to ``ignore_index`` on the device (no host
    sync, no data-dependent shape), so a batch with none gives an exact zero.
    """

    def __init__(self, terms: dict[str, dict], *, ignore_index: int):
        super().__init__()
        self.ignore_index = ignore_index
        self.weights = {name: float(options.get("weight", 1.0)) for name, options in terms.items()}
        self.terms = nn.ModuleDict(
            {
                name: LOSS_TERMS.get(name)(
                    ignore_index=ignore_index, **{k: v for k, v in options.items() if k != "weight"}
                )
                for name, options in terms.items()
            }
        )

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, has_label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if has_label is not None:
            labelled = has_label.to(target.device, non_blocking=True).view(-1, 1, 1)
            target = torch.where(labelled, target, self.ignore_index)
        log_probs = F.log_softmax(logits.float(), dim=1)  # once, for every term
        parts = {name: term(log_probs, target) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts
