"""One training step, as the trainer takes it: forward under autocast, the loss on float32 logits,
backward, an optimizer step; and the per-batch foreground counts the trainer logs.

:class:`Stepper` adds what the trainer needs around them (gradient accumulation, DDP's gradient
sync, the LR schedule); benchmarks and notebooks call :func:`training_step` for a step of their
own.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.engine.distributed import World, average_gradients
from mmseg_heads.engine.optim import optimizer_step
from mmseg_heads.engine.precision import autocast
from mmseg_heads.metrics.functional import foreground_tp_fp_fn, predicted_classes


def forward_loss(
    model: nn.Module,
    criterion: nn.Module,
    batch: dict,
    *,
    precision: str,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """``(float32 logits per task, loss, the loss's parts)`` of a collated batch.

    The model runs under ``precision``'s autocast; the loss outside it, on float32 logits.
    """
    with autocast(precision, device):
        logits = model(batch["images"])
    logits = {k: v.float() for k, v in logits.items()}
    loss, parts = criterion(logits, batch["labels"], batch["has_label"], batch.get("labelled"))
    return logits, loss, parts


def learns(logits: dict[str, torch.Tensor], parts: dict) -> bool:
    """Whether any task of the batch has a labelled sample (else there is nothing to learn).

    Known on the host: a non-finite loss is masked on the device instead (its task gives zero
    gradients), so deciding never waits for the GPU.
    """
    return len(parts["skipped"]) < len(logits)


def training_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    *,
    precision: str,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """One optimizer step on one collated batch, as the trainer takes it (without gradient
    accumulation, DDP and the LR schedule); returns ``(logits, loss, parts)``."""
    logits, loss, parts = forward_loss(model, criterion, batch, precision=precision, device=device)
    if learns(logits, parts):
        (loss if scaler is None else scaler.scale(loss)).backward()
    optimizer_step(optimizer, scaler, grad_clip=grad_clip, parameters=model.parameters())
    return logits, loss, parts


class Stepper:
    """The trainer's optimizer steps: the gradients of ``accumulate`` micro-batches summed (DDP
    all-reduces them on the last one only), the learned task weights averaged over processes,
    fp16 loss scaling, clipping to ``grad_clip``, then one step of the LR schedule.

    Attributes:
        step: optimizer steps the run has taken.
        skipped: after a step, a 0-d device tensor, nonzero when its gradients were not finite
            and the optimizer left the weights alone (None: no step, or fp16's scaler decided).
    """

    def __init__(
        self,
        trained: nn.Module,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        *,
        world: World,
        precision: str,
        device: torch.device,
        train_cfg: dict,
    ) -> None:
        """``trained``: what the forward pass runs (``model`` wrapped by DDP, compiled)."""
        self.trained, self.model, self.criterion = trained, model, criterion
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.world, self.precision, self.device = world, precision, device
        self.accumulate, self.grad_clip = train_cfg["accumulate"], train_cfg["grad_clip"]
        self.step = 0
        self.skipped: torch.Tensor | None = None

    def micro_batch(self, batch: dict, boundary: bool) -> tuple[dict, torch.Tensor, dict]:
        """Forward and backward one batch; ``boundary``: it ends an accumulation, and the
        optimizer steps after it. Returns ``(logits, loss, parts)``."""
        with self._gradient_sync(boundary):
            logits, loss, parts = forward_loss(
                self.trained, self.criterion, batch, precision=self.precision, device=self.device
            )
            if learns(logits, parts):
                self.scaler.scale(loss / self.accumulate).backward()
            elif self.world.distributed:
                # Nothing to learn, but every process must join each step's gradient all-reduce.
                sum(v.sum() for v in logits.values()).mul(0.0).backward()
        if boundary:
            average_gradients(self.criterion, self.world)  # outside DDP: learned task weights
            self.skipped = optimizer_step(
                self.optimizer,
                self.scaler,
                grad_clip=self.grad_clip,
                parameters=self.model.parameters(),
            )
            self.scheduler.step()
            self.step += 1
        return logits, loss, parts

    def _gradient_sync(self, boundary: bool):
        """DDP all-reduces gradients only on the micro-batch that ends an accumulation."""
        if self.world.distributed and not boundary:
            return self.trained.no_sync()
        return contextlib.nullcontext()


@torch.no_grad()
def batch_foreground_counts(
    logits: dict[str, torch.Tensor], batch: dict
) -> dict[str, torch.Tensor]:
    """Per task, ``[TP, FP, FN]`` over the foreground classes of the batch's labelled samples,
    as device tensors (read back later, by the step log)."""
    counts = {}
    for task, value in logits.items():
        labelled = batch["has_label"][task].view(-1, 1, 1)
        target = torch.where(labelled, batch["labels"][task], IGNORE_INDEX)
        counts[task] = foreground_tp_fp_fn(predicted_classes(value), target, IGNORE_INDEX)
    return counts
