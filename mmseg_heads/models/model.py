"""``MultiTaskSegmenter``: fusion trunk -> shared decoder -> one branch head per task."""

from __future__ import annotations

import torch
from torch import nn

from mmseg_heads.models.decoder import UnetDecoder
from mmseg_heads.models.heads import HeadInput
from mmseg_heads.models.trunk import FusionTrunk


class MultiTaskSegmenter(nn.Module):
    """Segments every task from co-registered modalities.

    Shape:
        forward ``images``: ``{modality: N×C×H×W}``, H and W multiples of ``trunk.max_stride``.
        Returns ``{task: N×num_classes×H×W}`` logits.
    """

    def __init__(
        self, trunk: FusionTrunk, heads: dict[str, nn.Module], decoder: UnetDecoder | None
    ):
        super().__init__()
        self.trunk = trunk
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)

    def forward(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        size = tuple(next(iter(images.values())).shape[-2:])
        multiple = self.trunk.max_stride
        if size[0] % multiple or size[1] % multiple:
            raise ValueError(
                f"input size {size} must be divisible by {multiple}; pad to "
                f"({-(-size[0] // multiple) * multiple}, {-(-size[1] // multiple) * multiple})"
            )
        fused, per_group = self.trunk(images)
        shared = self.decoder(fused, size) if self.decoder is not None else None
        inputs = HeadInput(fused=fused, per_group=per_group, shared=shared, size=size)
        return {task: head(inputs) for task, head in self.heads.items()}
