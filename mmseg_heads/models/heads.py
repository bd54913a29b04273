"""Branch heads: one per task, each with its own number of classes.

A head reads a :class:`HeadInput` (the trunk's fused and per-group features and the shared
decoder's output) and returns logits ``N×num_classes×H×W``. Head kinds are registered by the
``decoder`` option: ``shared`` (a classifier on the trunk's shared decoder) and ``own`` (a U-Net
decoder of its own on its source's levels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmseg_heads.models.decoder import UnetDecoder
from mmseg_heads.models.levels import LevelSpec
from mmseg_heads.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head decoder")


@dataclass
class HeadInput:
    fused: dict[int, torch.Tensor]
    per_group: dict[str, dict[int, torch.Tensor]]
    shared: torch.Tensor | None
    size: tuple[int, int]

    def features(self, source: str) -> dict[int, torch.Tensor]:
        return self.fused if source == "fused" else self.per_group[source]


def classifier(in_channels: int, num_classes: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)


@HEADS.register("shared")
class SharedDecoderHead(nn.Module):
    """A 3×3 conv classifier on the shared decoder's output (cheapest: one conv per task)."""

    uses_shared_decoder = True

    def __init__(self, *, num_classes: int, shared_channels: int, **_):
        super().__init__()
        self.classify = classifier(shared_channels, num_classes)

    def forward(self, inputs: HeadInput) -> torch.Tensor:
        return self.classify(inputs.shared)


@HEADS.register("own")
class OwnDecoderHead(nn.Module):
    """A U-Net decoder of its own over ``source``'s levels (fused, or one group before fusion)."""

    uses_shared_decoder = False

    def __init__(
        self,
        *,
        num_classes: int,
        source: str,
        levels: list[LevelSpec],
        decoder_channels: list[int],
        **_,
    ):
        super().__init__()
        self.source = source
        self.decoder = UnetDecoder(levels, decoder_channels)
        self.classify = classifier(self.decoder.out_channels, num_classes)

    def forward(self, inputs: HeadInput) -> torch.Tensor:
        return self.classify(self.decoder(inputs.features(self.source), inputs.size))
