"""The optimizer and LR schedule of a run, built from its ``train`` config section, and one
optimizer step (gradient clipping, fp16 loss scaling)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
from torch import nn

from mmseg_heads.engine.schedule import lr_factor


def build_optimizer(
    model: nn.Module, criterion: nn.Module | None, train_cfg: dict
) -> torch.optim.Optimizer:
    """Two parameter groups: encoders at ``lr × encoder_lr_mult``, everything else (the loss's
    learned task weights included) at ``lr``.

    ``train_cfg``: ``optimizer`` (``sgd``, ``adam``, ``adamw``), ``lr``, ``weight_decay`` and
    ``encoder_lr_mult``, as the config's ``train`` section has them.
    """
    encoder_ids = {id(p) for p in model.trunk.encoders.parameters()}
    encoders = [p for p in model.parameters() if id(p) in encoder_ids]
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    rest += list(criterion.parameters()) if criterion is not None else []
    lr, wd = train_cfg["lr"], train_cfg["weight_decay"]
    groups = [
        {"params": rest, "lr": lr},
        {"params": encoders, "lr": lr * train_cfg["encoder_lr_mult"]},
    ]
    # fused: one kernel for all parameters (measured 1.4× faster steps on the CPU, bench/whatif.py),
    # and a step skipped on the device when a gradient is not finite (optimizer_step)
    if train_cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd, fused=True)
    if train_cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd, fused=True)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=wd, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: dict, steps_per_epoch: list[int]
) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule over every optimizer step of the run (``steps_per_epoch``: one count per
    epoch), warm-up first; see :func:`~mmseg_heads.engine.schedule.lr_factor`. A ``step``
    schedule's period counts the steps of a whole epoch (the last one, or the one before it when
    ``train.steps`` cut the last one short)."""
    whole = steps_per_epoch[-1] if len(steps_per_epoch) < 2 else max(steps_per_epoch[-2:])
    schedule = partial(
        lr_factor,
        total=sum(steps_per_epoch),
        warmup=round(train_cfg["warmup_epochs"] * steps_per_epoch[0]),
        schedule=train_cfg["schedule"],
        step_size=train_cfg["step_epochs"] * whole,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    *,
    grad_clip: float | None = None,
    parameters: Iterable[torch.Tensor] = (),
) -> torch.Tensor | None:
    """Step where any parameter has a gradient, then clear every gradient; returns a 0-d device
    tensor, nonzero when the step was skipped for non-finite gradients (None: nothing to step).

    ``grad_clip``: clip the norm of ``parameters``' gradients first (unscaled under fp16).
    ``scaler``: fp16's ``GradScaler``, which skips a step whose gradients overflowed. Without
    it the same happens on the device, never waiting for it: the fused optimizers (those
    :func:`build_optimizer` makes) take a ``found_inf`` flag, as the scaler hands them, and
    leave every weight and state as it was; another optimizer just steps.
    A task whose loss is not finite is already masked out of the loss; this catches what masking
    cannot, such as NaN weights in its head sending NaN back through the shared layers.
    """
    if scaler is not None and not scaler.is_enabled():
        scaler = None  # bf16 and fp32 runs hold a disabled scaler: it would just call step()
    stepped = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    found_inf = None
    if stepped:
        if grad_clip:
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        if scaler is None and not optimizer.defaults.get("fused"):
            optimizer.step()  # another optimizer (a benchmark's): no device-side skip
        elif scaler is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in stepped])
            found_inf = (~torch.isfinite(norm)).float()
            optimizer.found_inf = found_inf
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf
        else:
            scaler.step(optimizer)  # fp16: skipped when a gradient overflowed
            scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return found_inf
