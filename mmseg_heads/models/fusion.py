"""Per-stride fusion of the features of several sources (modalities or encoder groups).

A fusion is built from ``{source: channels}`` at one stride and the channels it outputs. Its
``forward(features, present)`` takes ``{source: N×C×H×W}`` for the sources it was built with and
``present``, ``{source: N bool}`` saying which samples really have that source (a missing
modality's features are zeros and must not be read as data). It returns ``(fused, weights)``;
``weights`` is ``N×S`` (one weight per source, 0 for a missing one) for fusions that learn them,
else ``None``. Register a new mode with ``@FUSIONS.register("name")``; its ``missing_modality``
sentence tells evaluation reports what a missing modality means to it.
"""

from __future__ import annotations

import torch
from torch import nn

from mmseg_heads.registry import Registry

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")

Features = dict[str, torch.Tensor]
Present = dict[str, torch.Tensor]


def project(in_channels: int, out_channels: int) -> nn.Sequential:
    """1×1 conv + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _mask(present: Present, source: str, like: torch.Tensor) -> torch.Tensor:
    return present[source].to(like.dtype).view(-1, 1, 1, 1)


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate the sources along channels, then 1×1 conv + BN + ReLU.

    A missing source contributes zero features (after its encoder, never a fake input image).
    """

    missing_modality = "the concat fusion gets zero features in the missing modality's channels"

    def __init__(self, in_channels: dict[str, int], out_channels: int):
        super().__init__()
        self.sources = list(in_channels)
        self.project = project(sum(in_channels.values()), out_channels)

    def forward(self, features: Features, present: Present):
        parts = [features[s] * _mask(present, s, features[s]) for s in self.sources]
        return self.project(torch.cat(parts, dim=1)), None


@FUSIONS.register("sum")
class SumFusion(nn.Module):
    """Project each source (1×1 conv + BN + ReLU) and add.

    With sources missing, the sum over those present is rescaled by ``sources / present`` so its
    scale does not depend on how many are there (as inverted dropout does).
    """

    missing_modality = "the sum fusion adds the modalities present, rescaled to the full count"

    def __init__(self, in_channels: dict[str, int], out_channels: int):
        super().__init__()
        self.project = nn.ModuleDict({s: project(c, out_channels) for s, c in in_channels.items()})

    def forward(self, features: Features, present: Present):
        masks = {s: _mask(present, s, features[s]) for s in self.project}
        total = sum(self.project[s](features[s]) * masks[s] for s in self.project)
        count = sum(masks.values())
        return total * (len(self.project) / count.clamp(min=1)), None


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """Learned per-channel modality weights, softmax over the sources present in each sample.

    Each source is projected (1×1 conv + BN + ReLU); a score per source and channel comes from its
    globally pooled projection plus a learned prior; a softmax over the present sources (a missing
    one gets -inf) gives per-channel weights that sum to 1; the output is the weighted sum.
    ``weights`` averages them over channels: ``N×S``, summing to 1 over the sources present.
    """

    missing_modality = "the attention fusion's softmax runs over the modalities present only"

    def __init__(self, in_channels: dict[str, int], out_channels: int):
        super().__init__()
        self.sources = list(in_channels)
        self.project = nn.ModuleDict({s: project(c, out_channels) for s, c in in_channels.items()})
        self.score = nn.ModuleDict({s: nn.Linear(out_channels, out_channels) for s in in_channels})

    def forward(self, features: Features, present: Present):
        projected = [self.project[s](features[s]) for s in self.sources]
        scores = torch.stack(
            [
                self.score[s](p.mean(dim=(2, 3)))
                for s, p in zip(self.sources, projected, strict=True)
            ],
            dim=1,
        )  # N×S×C
        available = torch.stack([present[s] for s in self.sources], dim=1)  # N×S
        scores = scores.float().masked_fill(~available.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a sample with no source gets 0s
        stacked = torch.stack(projected, dim=1)  # N×S×C×H×W
        fused = (stacked * weights.to(stacked.dtype)[..., None, None]).sum(dim=1)
        return fused, weights.mean(dim=-1)
