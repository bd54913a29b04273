"""Loss maths on index labels, as pure functions. Ignored pixels never count, anywhere.

Every function takes ``logits`` ``N×C×H×W`` (any float dtype; computed in float32) and ``target``
``N×H×W`` int64 with ``ignore_index`` for pixels to skip, and returns a scalar. With no valid pixel
they return a zero that still carries the graph, never NaN.

``log_probs=True`` says the scores are already log-probabilities (``log_softmax`` over classes):
each loss is unchanged by that (softmax of log-probabilities gives the same probabilities), but it
skips its own softmax. ``TaskLoss`` computes ``log_softmax`` once per task and hands it to every
term, so ce + dice pass over the logits' softmax once instead of twice (``bench/losses.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _zero(logits: torch.Tensor) -> torch.Tensor:
    return logits.sum() * 0.0


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    log_probs: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy over valid pixels (weighted mean when ``class_weights`` are given)."""
    if not (target != ignore_index).any():
        return _zero(logits)
    if log_probs and not label_smoothing:  # cross-entropy of log-probabilities is their NLL
        return F.nll_loss(logits.float(), target, weight=class_weights, ignore_index=ignore_index)
    return F.cross_entropy(
        logits.float(),
        target,
        weight=class_weights,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    gamma: float = 2.0,
    alpha: float | torch.Tensor | None = None,
    log_probs: bool = False,
) -> torch.Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t``, averaged over valid pixels only.

    ``alpha`` is a scalar (weight of every class) or a per-class tensor.
    """
    valid = target != ignore_index
    if not valid.any():
        return _zero(logits)
    scores = logits.float() if log_probs else F.log_softmax(logits.float(), dim=1)
    safe_target = torch.where(valid, target, 0).unsqueeze(1)
    log_pt = scores.gather(1, safe_target).squeeze(1)[valid]
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    if alpha is not None:
        alpha_t = alpha[safe_target.squeeze(1)[valid]] if torch.is_tensor(alpha) else alpha
        loss = loss * alpha_t
    return loss.mean()


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    smooth: float = 1.0,
    per_sample: bool = False,
    log_probs: bool = False,
) -> torch.Tensor:
    """``1 - Dice`` of softmax probabilities, averaged over the classes present in the target.

    Ignored pixels are removed from both predictions and targets. A class absent from the target
    is left out of the average: counting it would add a constant (or reward pushing its
    probabilities to exactly zero) without teaching anything; cross-entropy penalises its false
    positives. ``per_sample`` pools per image instead of over the whole batch.
    """
    batch, classes = logits.shape[:2]
    valid = target != ignore_index
    probs = logits.float().exp() if log_probs else F.softmax(logits.float(), dim=1)
    # Per-class sums without a one-hot tensor (C times the logits' memory) and without boolean
    # indexing. Each pixel's probability of its own class is summed into a (sample, class)
    # bucket with index_add_, pixels are counted with bincount, and ignored pixels go to an extra
    # bucket per sample that is dropped. (On CUDA, bincount reads its input's range back to the
    # host, and index_add_'s atomics queue on few buckets: docs/performance.md §9.)
    buckets = classes + 1
    own = probs.gather(1, torch.where(valid, target, 0).unsqueeze(1)).reshape(-1)
    groups = torch.where(valid, target, classes)
    groups = (groups + buckets * torch.arange(batch, device=groups.device).view(-1, 1, 1)).view(-1)
    intersection = own.new_zeros(batch * buckets).index_add_(0, groups, own)
    counts = torch.bincount(groups, minlength=batch * buckets)
    intersection, counts = (x.view(batch, buckets)[:, :classes] for x in (intersection, counts))
    prob_sums = torch.where(valid.unsqueeze(1), probs, 0.0).sum((2, 3))
    if not per_sample:
        intersection, counts, prob_sums = (x.sum(0) for x in (intersection, counts, prob_sums))
    denominator = (prob_sums + counts + smooth).clamp_min(torch.finfo(probs.dtype).tiny)
    dice = (2.0 * intersection + smooth) / denominator
    # Mean over the classes present in the target; none present (all ignored) gives 0.
    present = counts > 0
    return torch.where(present, 1.0 - dice, 0.0).sum() / present.sum().clamp_min(1)
