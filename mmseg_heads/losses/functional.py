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


def _valid_mean(values: torch.Tensor, valid: torch.Tensor, weights=None) -> torch.Tensor:
    """Sum of ``values`` over valid pixels divided by their count (or summed ``weights``): a mean
    with no data-dependent shape and no host sync, and an exact 0 (with a graph) with no valid
    pixel, where PyTorch's own ``mean`` would give NaN."""
    denominator = valid.sum() if weights is None else torch.where(valid, weights, 0.0).sum()
    return torch.where(valid, values, 0.0).sum() / denominator.clamp_min(1e-12)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    log_probs: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy over valid pixels (weighted mean when ``class_weights`` are given, as
    PyTorch's ``reduction="mean"``)."""
    valid = target != ignore_index
    if log_probs and not label_smoothing:  # cross-entropy of log-probabilities is their NLL
        per_pixel = F.nll_loss(
            logits.float(),
            target,
            weight=class_weights,
            ignore_index=ignore_index,
            reduction="none",
        )
    else:
        per_pixel = F.cross_entropy(
            logits.float(),
            target,
            weight=class_weights,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction="none",
        )
    weights = None
    if class_weights is not None:
        weights = class_weights[torch.where(valid, target, 0)]
    return _valid_mean(per_pixel, valid, weights)


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
    scores = logits.float() if log_probs else F.log_softmax(logits.float(), dim=1)
    safe_target = torch.where(valid, target, 0)
    log_pt = scores.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    if alpha is not None:
        loss = loss * (alpha[safe_target] if torch.is_tensor(alpha) else alpha)
    return _valid_mean(loss, valid)


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    smooth: float = 1.0,
    per_sample: bool = False,
    log_probs: bool = False,
    method: str | None = None,
) -> torch.Tensor:
    """``1 - Dice`` of softmax probabilities, averaged over the classes present in the target.

    Ignored pixels are removed from both predictions and targets. A class absent from the target
    is left out of the average: counting it would add a constant (or reward pushing its
    probabilities to exactly zero) without teaching anything; cross-entropy penalises its false
    positives. ``per_sample`` pools per image instead of over the whole batch.

    ``method``: how the per-class sums are taken, ``"scatter"`` (the CPU default) or
    ``"onehot"`` (the CUDA default); both give the same values and gradients.
    """
    batch, classes = logits.shape[:2]
    valid = target != ignore_index
    probs = logits.float().exp() if log_probs else F.softmax(logits.float(), dim=1)
    method = method or ("onehot" if probs.is_cuda else "scatter")
    if method == "scatter":
        intersection, counts = _class_sums_scatter(probs, target, valid)
    elif method == "onehot":
        intersection, counts = _class_sums_onehot(probs, target)
    else:
        raise ValueError(f"method must be 'scatter' or 'onehot', got {method!r}")
    prob_sums = torch.where(valid.unsqueeze(1), probs, 0.0).sum((2, 3))
    if not per_sample:
        intersection, counts, prob_sums = (x.sum(0) for x in (intersection, counts, prob_sums))
    denominator = (prob_sums + counts + smooth).clamp_min(torch.finfo(probs.dtype).tiny)
    dice = (2.0 * intersection + smooth) / denominator
    # Mean over the classes present in the target; none present (all ignored) gives 0.
    present = counts > 0
    return torch.where(present, 1.0 - dice, 0.0).sum() / present.sum().clamp_min(1)


def _class_sums_scatter(
    probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, class): the probabilities of the pixels of that class, and their count.

    Without a one-hot tensor (C times the logits' memory): each pixel's probability of its own
    class is summed into a (sample, class) bucket with ``index_add_``, pixels are counted with
    ``bincount``, and ignored pixels go to an extra bucket per sample that is dropped. The faster
    path on the CPU; on CUDA ``bincount`` reads its input's range back to the host and
    ``index_add_``'s atomics queue on few buckets (docs/performance.md §9).
    """
    batch, classes = probs.shape[:2]
    buckets = classes + 1
    own = probs.gather(1, torch.where(valid, target, 0).unsqueeze(1)).reshape(-1)
    groups = torch.where(valid, target, classes)
    groups = (groups + buckets * torch.arange(batch, device=groups.device).view(-1, 1, 1)).view(-1)
    intersection = own.new_zeros(batch * buckets).index_add_(0, groups, own)
    counts = torch.bincount(groups, minlength=batch * buckets)
    return (x.view(batch, buckets)[:, :classes] for x in (intersection, counts))


def _class_sums_onehot(
    probs: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same sums as :func:`_class_sums_scatter` as plain reductions over a class mask (what
    smp's DiceLoss does): no atomics, no host sync. An ignored pixel matches no class (the
    ignore index is never one), so it drops out by itself."""
    classes = probs.shape[1]
    mask = target.unsqueeze(1) == torch.arange(classes, device=target.device).view(1, -1, 1, 1)
    intersection = torch.where(mask, probs, 0.0).sum((2, 3))
    return intersection, mask.sum((2, 3))
