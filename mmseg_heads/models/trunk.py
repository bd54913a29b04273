"""``FusionTrunk``: one encoder per modality (or group), levels aligned by stride, fused per stride.

VGG16 gives strides 1–32 and ResNet50 2–32, so level *i* of one is not level *i* of the other: the
trunk pairs levels by stride, fuses the sources present at each stride, and derives every channel
count from the encoders.

Missing modalities are explicit: a modality absent from the input dict (at inference) or dropped
for a sample (``modality_dropout`` in training) is marked absent in ``present``, and the fusions
leave it out; its encoder's features are zeros, never an encoding of a fake all-zero image.
A stacked group (early fusion, ``"C0+LGE+T2"``) is the exception: its encoder sees all its members
at once, so a missing member's channels are zeros (the normalised mean) and the group stays present
while any member is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmseg_heads.errors import UserError
from mmseg_heads.models.encoders import Encoder
from mmseg_heads.models.fusion import FUSIONS
from mmseg_heads.models.levels import LevelSpec


@dataclass
class TrunkOutput:
    """What the trunk hands to the heads."""

    fused: dict[int, torch.Tensor]  # {stride: N×C×H/s×W/s}
    per_group: dict[str, dict[int, torch.Tensor]]  # {group: {stride: …}} before fusion
    present: dict[str, torch.Tensor]  # {group: N bool}, what the fusions used
    fusion_weights: dict[int, torch.Tensor | None]  # {stride: N×groups} for learned fusions


def _select_strides(
    levels: dict[str, list[LevelSpec]], strides: list[int] | None
) -> dict[str, list[LevelSpec]]:
    if strides is None:
        return levels
    available = sorted({lv.stride for group in levels.values() for lv in group})
    unknown = sorted(set(strides) - set(available))
    if unknown or max(available) not in strides:
        raise UserError(
            f"strides {unknown} are not levels of the encoders (available: {available})"
            if unknown
            else f"must include the deepest stride {max(available)}, where decoders start",
            field="model.strides",
        )
    return {g: [lv for lv in group if lv.stride in strides] for g, group in levels.items()}


class FusionTrunk(nn.Module):
    """Encode each input group and fuse the levels of equal stride.

    Args:
        encoders: ``{group: Encoder}``. The same Encoder object under several groups shares weights.
        groups: ``{group: (modality, ...)}``; a group of several modalities stacks them as channels
            into its encoder (early fusion).
        fusion: name of a registered fusion mode.
        modality_dropout: in training, the probability of dropping each group from the fusion for a
            sample; at least one group always stays.
        modality_channels: ``{modality: channels}``, needed to zero-fill a missing member of a
            stacked group (without it such a group is absent when any member is).
        strides: the strides whose levels are fused and handed on (default: every stride any
            encoder has); the deepest must be among them, since decoders start there.

    Shape:
        forward ``images``: ``{modality: N×C×H×W}`` (any subset of the modalities), H and W
        multiples of the largest stride; ``present``: optional ``{modality: N bool}``.
    """

    def __init__(
        self,
        encoders: dict[str, Encoder],
        groups: dict[str, tuple[str, ...]],
        fusion: str,
        modality_dropout: float = 0.0,
        strides: list[int] | None = None,
        modality_channels: dict[str, int] | None = None,
    ):
        super().__init__()
        self.groups = {g: tuple(ms) for g, ms in groups.items()}
        #: channels of each modality: a missing member of a stacked group is filled with zeros
        self.modality_channels = dict(modality_channels or {})
        self.encoders = nn.ModuleDict(encoders)
        self.modality_dropout = modality_dropout
        self.source_levels = _select_strides(
            {g: list(e.levels) for g, e in encoders.items()}, strides
        )
        self.levels: list[LevelSpec] = []
        fusions = {}
        for stride in sorted(
            {lv.stride for levels in self.source_levels.values() for lv in levels}
        ):
            in_channels = self.channels_at(stride)
            # The widest source sets the fused width, so fusion never becomes a bottleneck.
            out_channels = max(in_channels.values())
            fusions[str(stride)] = FUSIONS.get(fusion)(in_channels, out_channels)
            self.levels.append(LevelSpec(stride, out_channels))
        self.fusions = nn.ModuleDict(fusions)

    def channels_at(self, stride: int) -> dict[str, int]:
        """``{group: channels}`` of the groups that have a level at ``stride``."""
        return {
            g: lv.channels
            for g, levels in self.source_levels.items()
            for lv in levels
            if lv.stride == stride
        }

    @property
    def max_stride(self) -> int:
        return max(level.stride for level in self.levels)

    def group_presence(
        self, images: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """``{group: N bool}``: a group is present for a sample when all its modalities are, or,
        for a stacked group that can zero-fill its members, when any of them is."""
        reference = next(iter(images.values()))
        n = reference.shape[0]
        out = {}
        for group, members in self.groups.items():
            masks = [
                self._member_presence(m, images, present, n, reference.device) for m in members
            ]
            stacked = torch.stack(masks)
            out[group] = stacked.any(0) if self._zero_fills(members) else stacked.all(0)
        return out

    def _zero_fills(self, members: tuple[str, ...]) -> bool:
        return len(members) > 1 and all(m in self.modality_channels for m in members)

    @staticmethod
    def _member_presence(
        modality: str,
        images: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None,
        n: int,
        device: torch.device,
    ) -> torch.Tensor:
        if modality not in images:
            return torch.zeros(n, dtype=torch.bool, device=device)
        if present is not None and modality in present:
            return present[modality].to(device, torch.bool)
        return torch.ones(n, dtype=torch.bool, device=device)

    def drop_modalities(self, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop each present group with probability ``modality_dropout``; keep ≥ 1 per sample."""
        stacked = torch.stack(list(present.values()), dim=1)  # N×G
        keep = torch.rand(stacked.shape, device=stacked.device) >= self.modality_dropout
        dropped = stacked & keep
        empty = ~dropped.any(dim=1) & stacked.any(dim=1)
        # Restore one randomly chosen present group in each sample that lost them all: drawn
        # for every sample and applied where needed (asking whether any needs it would wait for
        # the GPU each step).
        scores = torch.rand(stacked.shape, device=stacked.device).masked_fill(~stacked, -1.0)
        restore = torch.zeros_like(dropped).scatter_(1, scores.argmax(1, keepdim=True), True)
        dropped = dropped | (restore & empty.unsqueeze(1))
        return {g: dropped[:, i] for i, g in enumerate(present)}

    def encode(
        self,
        images: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None = None,
        member_present: dict[str, torch.Tensor] | None = None,
    ) -> dict:
        """Per-group features; a group absent from the whole batch gets zeros and no encoder run.

        ``present`` (per-sample masks by group) only matters when given: without it every group in
        ``images`` is encoded, a branch that depends on no tensor value (ONNX export traces it).
        ``member_present`` (per-sample masks by modality) zero-fills absent members of stacked
        groups sample by sample.
        """
        reference = next(iter(images.values()))
        n, (h, w) = reference.shape[0], reference.shape[-2:]
        out = {}
        for group, members in self.groups.items():
            someone_has_it = present is None or bool(present[group].any())
            complete = all(m in images for m in members)
            if someone_has_it and (complete or self._zero_fills(members)):
                x = self._group_input(members, images, member_present)
                out[group] = self.encoders[group](x)
            else:  # absent from the whole batch: zero features, and no encoder cost
                out[group] = {
                    lv.stride: reference.new_zeros(n, lv.channels, h // lv.stride, w // lv.stride)
                    for lv in self.source_levels[group]
                }
        return out

    def _group_input(
        self,
        members: tuple[str, ...],
        images: dict[str, torch.Tensor],
        member_present: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The encoder input of a group: its modalities stacked, zeros for a missing member
        (absent from ``images``, or marked absent for a sample in ``member_present``)."""
        if len(members) == 1:
            return images[members[0]]
        reference = next(iter(images.values()))
        n, (h, w) = reference.shape[0], reference.shape[-2:]
        parts = []
        for m in members:
            if m not in images:
                parts.append(reference.new_zeros(n, self.modality_channels[m], h, w))
            elif member_present is not None and m in member_present:
                keep = member_present[m].to(images[m].device, images[m].dtype).view(-1, 1, 1, 1)
                parts.append(images[m] * keep)
            else:
                parts.append(images[m])
        return torch.cat(parts, 1)

    def forward(
        self, images: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> TrunkOutput:
        available = self.group_presence(images, present)
        per_group = self.encode(images, available if present is not None else None, present)
        fusion_present = available
        if self.training and self.modality_dropout > 0:
            fusion_present = self.drop_modalities(available)
        fused, weights = {}, {}
        for level in self.levels:
            sources = {g: f[level.stride] for g, f in per_group.items() if level.stride in f}
            masks = {g: fusion_present[g] for g in sources}
            fused[level.stride], weights[level.stride] = self.fusions[str(level.stride)](
                sources, masks
            )
        return TrunkOutput(
            fused=fused, per_group=per_group, present=fusion_present, fusion_weights=weights
        )
