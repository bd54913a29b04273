"""A U-Net decoder sized from ``LevelSpec`` s, built from smp's ``UnetDecoderBlock``."""

from __future__ import annotations

import math

import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock
from torch import nn

from mmseg_heads.errors import UserError
from mmseg_heads.models.gates import GATES
from mmseg_heads.models.levels import LevelSpec, by_stride


def decoder_strides(levels: list[LevelSpec]) -> list[int]:
    """Strides the decoder blocks output, from the deepest level's half down to stride 1."""
    deepest = max(level.stride for level in levels)
    return [deepest >> (i + 1) for i in range(int(math.log2(deepest)))]


class UnetDecoder(nn.Module):
    """Upsample from the deepest level to stride 1, concatenating the level of each stride on the way.

    A stride with no level (ResNet has none at stride 1) gets a block without a skip connection.

    Args:
        levels: the levels it reads, e.g. ``trunk.levels``.
        channels: output channels of each block, one per halving of the stride (5 for stride 32).
        gate: name of a registered gate (:data:`~mmseg_heads.models.gates.GATES`) to put on every
            skip connection, gated by the decoder's coarser feature map (``attention``: Attention
            U-Net), or ``None``.

    Shape:
        forward ``features``: ``{stride: N×C×H/s×W/s}``, ``size``: ``(H, W)``.
        Returns ``(N×channels[-1]×H×W, [alpha maps of the gated skips, coarse to fine])``.
    """

    def __init__(self, levels: list[LevelSpec], channels: list[int], *, gate: str | None = None):
        super().__init__()
        self.strides = decoder_strides(levels)
        if len(channels) != len(self.strides):
            raise UserError(
                f"needs {len(self.strides)} values, one per decoder block (strides "
                f"{', '.join(map(str, self.strides))}), got {len(channels)}",
                field="model.decoder_channels",
            )
        table = by_stride(levels)
        self.deepest = max(table)
        blocks, gates = [], {}
        in_channels = table[self.deepest].channels
        for stride, out_channels in zip(self.strides, channels, strict=True):
            skip = table[stride].channels if stride in table else 0
            blocks.append(UnetDecoderBlock(in_channels, skip, out_channels))
            if gate is not None and skip:
                gates[str(stride)] = GATES.get(gate)(skip, in_channels)
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.gates = nn.ModuleDict(gates)
        self.out_channels = channels[-1]

    def forward(
        self, features: dict[int, torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = features[self.deepest]
        alphas = []
        for stride, block in zip(self.strides, self.blocks, strict=True):
            skip = features.get(stride)
            if skip is not None and str(stride) in self.gates:
                skip, alpha = self.gates[str(stride)](skip, x)
                alphas.append(alpha)
            x = block(x, size[0] // stride, size[1] // stride, skip)
        return x, alphas
