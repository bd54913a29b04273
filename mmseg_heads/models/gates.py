"""Gates a head can use (``gate: <name>``), registered in :data:`GATES`.

A gate is built as ``Gate(x_channels, g_channels)`` and called as ``gate(x, g)`` with a feature
map ``x`` and a coarser gating signal ``g``; it returns ``(gated x, alpha N×1×H×W)``. A head with
a gate also fuses the modalities with task-specific attention (:mod:`~mmseg_heads.models.heads`).
Register a new one with ``@GATES.register("name")``: the config's ``gate`` choices follow.

- :class:`AttentionGate`: additive attention (Oktay et al., "Attention U-Net", 2018): a feature map
  ``x`` is re-weighted per pixel by ``alpha = sigmoid(psi(relu(W_x x + W_g up(g))))``, where the
  gating signal ``g`` is a coarser, more semantic feature map.
- Task-specific modality attention reuses :class:`~mmseg_heads.models.fusion.AttentionFusion`: per
  task and stride, a softmax over the modalities present decides what the task reads.

Both return their weights so a report can show which modality each task relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmseg_heads.registry import Registry

GATES: Registry[type[nn.Module]] = Registry("gate")
#: The ``gate`` value of a head without one.
NO_GATE = "none"


@GATES.register("attention")
class AttentionGate(nn.Module):
    """Additive attention gate.

    Args:
        x_channels: channels of the gated feature map.
        g_channels: channels of the gating signal.
        inter_channels: width of the attention's hidden layer (default ``max(x_channels // 2, 1)``).

    Shape:
        forward ``x``: ``N×Cx×H×W``, ``g``: ``N×Cg×h×w`` (any coarser size).
        Returns ``(x * alpha, alpha)`` with ``alpha``: ``N×1×H×W`` in (0, 1).
    """

    def __init__(self, x_channels: int, g_channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or max(x_channels // 2, 1)
        self.theta_x = nn.Conv2d(x_channels, inter, kernel_size=1, bias=False)
        self.phi_g = nn.Conv2d(g_channels, inter, kernel_size=1)
        self.psi = nn.Conv2d(inter, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = F.interpolate(self.phi_g(g), size=x.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(self.theta_x(x) + gate)))
        return x * alpha, alpha
