"""Run a model over a split and accumulate one confusion matrix per task."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmseg_heads.data.spec import IGNORE_INDEX, DataSpec
from mmseg_heads.engine.precision import autocast
from mmseg_heads.metrics.confusion import ConfusionMatrix


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        **batch,
        "images": {k: v.to(device, non_blocking=True) for k, v in batch["images"].items()},
        "labels": {k: v.to(device, non_blocking=True) for k, v in batch["labels"].items()},
        "has_label": {k: v.to(device) for k, v in batch["has_label"].items()},
    }


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    spec: DataSpec,
    *,
    device: torch.device,
    precision: str,
    progress: bool = False,
) -> dict[str, ConfusionMatrix]:
    """``{task: ConfusionMatrix}`` over every labelled pixel of the loader; padding is ignored."""
    model.eval()
    matrices = {
        t.name: ConfusionMatrix(list(t.classes), IGNORE_INDEX, device) for t in spec.tasks.values()
    }
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        batch = to_device(batch, device)
        with autocast(precision, device):
            logits = model(batch["images"])
        for task, matrix in matrices.items():
            labelled = batch["has_label"][task]
            if labelled.any():
                matrix.update(logits[task][labelled].argmax(1), batch["labels"][task][labelled])
    return matrices
