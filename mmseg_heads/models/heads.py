"""Branch heads: one per task, each with its own number of classes.

A head reads a :class:`HeadInput` (the trunk's output and the shared decoder's) and returns
``(logits N×num_classes×H×W, gates)``, where ``gates`` holds the weights of its attention gates
(empty without ``gate: attention``). Head kinds are registered by the ``decoder`` option:

- ``shared``: a classifier on the trunk's shared decoder (cheapest: one conv per task). With
  ``gate: attention``, task-specific modality attention at the deepest stride makes a gating
  signal, and an additive attention gate re-weights the shared decoder's output per pixel.
- ``own``: a U-Net decoder of its own over ``source``'s levels (``fused``, or one modality's
  encoder before fusion). With ``gate: attention`` and ``source: fused``, the head fuses the
  modalities itself with task-specific attention at every stride, and its decoder gates every
  skip connection (Attention U-Net).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmseg_heads.models.decoder import UnetDecoder
from mmseg_heads.models.fusion import AttentionFusion
from mmseg_heads.models.gates import GATES, NO_GATE
from mmseg_heads.models.levels import LevelSpec
from mmseg_heads.models.trunk import FusionTrunk, TrunkOutput
from mmseg_heads.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head decoder")


@dataclass
class HeadInput:
    trunk: TrunkOutput
    shared: torch.Tensor | None
    size: tuple[int, int]


def classifier(in_channels: int, num_classes: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)


class TaskModalityAttention(nn.Module):
    """Per task: one attention fusion per stride over the trunk's per-modality features."""

    def __init__(self, trunk: FusionTrunk, strides: list[int]):
        super().__init__()
        self.fusions = nn.ModuleDict(
            {
                str(s): AttentionFusion(trunk.channels_at(s), max(trunk.channels_at(s).values()))
                for s in strides
            }
        )

    def forward(
        self, trunk: TrunkOutput
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        fused, weights = {}, {}
        for key, fusion in self.fusions.items():
            stride = int(key)
            sources = {g: f[stride] for g, f in trunk.per_group.items() if stride in f}
            fused[stride], weights[stride] = fusion(sources, {g: trunk.present[g] for g in sources})
        return fused, weights


@HEADS.register("shared")
class SharedDecoderHead(nn.Module):
    uses_shared_decoder = True

    def __init__(
        self, *, num_classes: int, trunk: FusionTrunk, shared_channels: int, gate: str = "none", **_
    ):
        super().__init__()
        self.modality_attention = self.gate = None
        if gate != NO_GATE:
            deepest = trunk.max_stride
            self.modality_attention = TaskModalityAttention(trunk, [deepest])
            self.gate = GATES.get(gate)(shared_channels, max(trunk.channels_at(deepest).values()))
        self.classify = classifier(shared_channels, num_classes)

    def forward(self, inputs: HeadInput) -> tuple[torch.Tensor, dict]:
        if self.gate is None:
            return self.classify(inputs.shared), {}
        fused, weights = self.modality_attention(inputs.trunk)
        x, alpha = self.gate(inputs.shared, next(iter(fused.values())))
        return self.classify(x), {"modality": weights, "spatial": [alpha]}


@HEADS.register("own")
class OwnDecoderHead(nn.Module):
    uses_shared_decoder = False

    def __init__(
        self,
        *,
        num_classes: int,
        trunk: FusionTrunk,
        source: str,
        decoder_channels: list[int],
        gate: str = "none",
        **_,
    ):
        super().__init__()
        self.source = source
        levels: list[LevelSpec] = trunk.levels if source == "fused" else trunk.source_levels[source]
        self.modality_attention = None
        if gate != NO_GATE and source == "fused" and len(trunk.groups) > 1:
            self.modality_attention = TaskModalityAttention(trunk, [lv.stride for lv in levels])
        self.decoder = UnetDecoder(levels, decoder_channels, gate=None if gate == NO_GATE else gate)
        self.classify = classifier(self.decoder.out_channels, num_classes)

    def forward(self, inputs: HeadInput) -> tuple[torch.Tensor, dict]:
        gates: dict = {}
        if self.modality_attention is not None:
            features, gates["modality"] = self.modality_attention(inputs.trunk)
        elif self.source == "fused":
            features = inputs.trunk.fused
        else:
            features = inputs.trunk.per_group[self.source]
        x, alphas = self.decoder(features, inputs.size)
        if alphas:
            gates["spatial"] = alphas
        return self.classify(x), gates
