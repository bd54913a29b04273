"""``FusionTrunk``: one encoder per modality (or group), levels aligned by stride, fused per stride.

VGG16 gives strides 1–32 and ResNet50 2–32, so level *i* of one is not level *i* of the other: the
trunk pairs levels by stride, fuses the sources present at each stride, and derives every channel
count from the encoders.
"""

from __future__ import annotations

import torch
from torch import nn

from mmseg_heads.models.encoders import Encoder
from mmseg_heads.models.fusion import FUSIONS
from mmseg_heads.models.levels import LevelSpec


class FusionTrunk(nn.Module):
    """Encode each input group and fuse the levels of equal stride.

    Args:
        encoders: ``{group: Encoder}``. The same Encoder object under several groups shares weights.
        groups: ``{group: (modality, ...)}``; a group of several modalities stacks them as channels
            into its encoder (early fusion).
        fusion: name of a registered fusion mode.

    Shape:
        forward ``images``: ``{modality: N×C×H×W}`` with H and W multiples of the largest stride.
        Returns ``(fused, per_group)``: ``{stride: N×C_s×H/s×W/s}`` and ``{group: {stride: …}}``.
    """

    def __init__(
        self, encoders: dict[str, Encoder], groups: dict[str, tuple[str, ...]], fusion: str
    ):
        super().__init__()
        self.groups = {g: tuple(ms) for g, ms in groups.items()}
        self.encoders = nn.ModuleDict(encoders)
        self.source_levels = {g: list(e.levels) for g, e in encoders.items()}
        strides = sorted({lv.stride for levels in self.source_levels.values() for lv in levels})
        self.levels: list[LevelSpec] = []
        fusions = {}
        for stride in strides:
            in_channels = {
                g: lv.channels
                for g, levels in self.source_levels.items()
                for lv in levels
                if lv.stride == stride
            }
            # The widest source sets the fused width, so fusion never becomes a bottleneck.
            out_channels = max(in_channels.values())
            fusions[str(stride)] = FUSIONS.get(fusion)(in_channels, out_channels)
            self.levels.append(LevelSpec(stride, out_channels))
        self.fusions = nn.ModuleDict(fusions)

    @property
    def max_stride(self) -> int:
        return max(level.stride for level in self.levels)

    def encode(self, images: dict[str, torch.Tensor]) -> dict[str, dict[int, torch.Tensor]]:
        out = {}
        for group, modalities in self.groups.items():
            x = (
                images[modalities[0]]
                if len(modalities) == 1
                else torch.cat([images[m] for m in modalities], 1)
            )
            out[group] = self.encoders[group](x)
        return out

    def forward(
        self, images: dict[str, torch.Tensor]
    ) -> tuple[dict[int, torch.Tensor], dict[str, dict[int, torch.Tensor]]]:
        per_group = self.encode(images)
        fused = {}
        for level in self.levels:
            sources = {g: f[level.stride] for g, f in per_group.items() if level.stride in f}
            fused[level.stride] = self.fusions[str(level.stride)](sources)
        return fused, per_group
