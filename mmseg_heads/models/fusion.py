"""Per-stride fusion of the features of several modalities into one feature map.

A fusion is built from the channels of each source present at that stride and the channels it
should output; ``forward`` takes ``{source: N×C×H×W}``. Register a new mode with
``@FUSIONS.register("name")``.
"""

from __future__ import annotations

import torch
from torch import nn

from mmseg_heads.registry import Registry

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate the sources along channels, then a 1×1 conv + BN + ReLU."""

    def __init__(self, in_channels: dict[str, int], out_channels: int):
        super().__init__()
        self.sources = list(in_channels)
        self.project = _project(sum(in_channels.values()), out_channels)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project(torch.cat([features[s] for s in self.sources], dim=1))


@FUSIONS.register("sum")
class SumFusion(nn.Module):
    """Project each source with a 1×1 conv + BN + ReLU, then add."""

    def __init__(self, in_channels: dict[str, int], out_channels: int):
        super().__init__()
        self.project = nn.ModuleDict({s: _project(c, out_channels) for s, c in in_channels.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.project[s](f) for s, f in features.items()]).sum(0)
