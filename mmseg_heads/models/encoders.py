"""Encoders from smp and timm, with their feature levels read off the encoder, never typed.

``build_encoder("vgg16", in_channels=1)`` returns an :class:`Encoder` whose ``levels`` list the
``(stride, channels)`` of each feature map. Any name smp knows works (``resnet50``, ``vgg16``,
``efficientnet-b0`` …), and ``tu-<timm name>`` gives any timm backbone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from mmseg_heads.errors import UserError
from mmseg_heads.models.levels import LevelSpec

#: Size of the probe image used to read the strides of an encoder's levels.
_PROBE_SIZE = 64


class Encoder(nn.Module):
    """Wraps an smp encoder: ``forward(x)`` returns ``{stride: feature}`` for each level.

    smp encoders return the input itself as their first "feature" when the network has no
    stride-1 stage (ResNet); that is not a feature, so it is dropped. VGG's first feature is a real
    stride-1 convolution output and is kept.
    """

    def __init__(self, backbone: nn.Module, in_channels: int, name: str):
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.in_channels = in_channels
        self.levels, self._keep = self._read_levels()

    @torch.no_grad()
    def _read_levels(self) -> tuple[list[LevelSpec], list[int]]:
        was_training = self.backbone.training
        self.backbone.eval()
        probe = torch.zeros(1, self.in_channels, _PROBE_SIZE, _PROBE_SIZE)
        features = self.backbone(probe)
        self.backbone.train(was_training)
        levels, keep = [], []
        for index, feature in enumerate(features):
            if feature is probe:
                continue
            levels.append(
                LevelSpec(stride=_PROBE_SIZE // feature.shape[-1], channels=feature.shape[1])
            )
            keep.append(index)
        return levels, keep

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        features = self.backbone(x)
        return {level.stride: features[i] for level, i in zip(self.levels, self._keep, strict=True)}


def build_encoder(
    name: str, *, in_channels: int, pretrained: str = "none", depth: int = 5
) -> Encoder:
    """Build an smp/timm encoder.

    Args:
        name: an smp encoder name (``vgg16``, ``resnet50`` …) or ``tu-<timm model>``.
        in_channels: input channels; smp adapts the first convolution of pretrained weights.
        pretrained: ``none``, ``imagenet`` or a path to a local state dict file.
        depth: number of downsampling stages (5 gives strides up to 32).
    """
    weights = "imagenet" if pretrained == "imagenet" else None
    local = pretrained not in ("none", "imagenet")
    try:
        # Local weights are 3-channel like smp's: load them into a 3-channel encoder, then let smp
        # adapt the first convolution to ``in_channels`` exactly as it does for ImageNet weights.
        backbone = smp.encoders.get_encoder(
            name, in_channels=3 if local else in_channels, depth=depth, weights=weights
        )
    except (KeyError, ValueError) as exc:
        raise UserError(f"cannot build encoder {name!r}: {exc}", field="encoder") from exc
    except OSError as exc:  # no network and no cached weights
        raise UserError(
            f"cannot download ImageNet weights for {name!r} ({exc}); put a local state dict file "
            "path in `pretrained:` instead, or use `pretrained: none`",
            field="pretrained",
        ) from exc
    if local:
        _load_local_weights(backbone, Path(pretrained))
        if in_channels != 3:
            backbone.set_in_channels(in_channels, pretrained=True)
    return Encoder(backbone, in_channels, name)


def _load_local_weights(backbone: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise UserError("weights file not found", file=path, field="pretrained")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"not a PyTorch weights file ({exc})", file=path, field="pretrained"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError("expected a state dict (name -> tensor)", file=path, field="pretrained")
    own = backbone.state_dict()
    matching = {
        k: v
        for k, v in state.items()
        if k in own and torch.is_tensor(v) and v.shape == own[k].shape
    }
    if not matching:
        raise UserError(
            f"no tensor matches the encoder's parameters by name and shape (file keys e.g. {list(state)[:3]})",
            file=path,
            field="pretrained",
        )
    nn.Module.load_state_dict(backbone, matching, strict=False)
    skipped = len(own) - len(matching)
    if skipped:
        logging.getLogger(__name__).warning(
            "%s: %d encoder tensors not in the file keep their initial values", path, skipped
        )
