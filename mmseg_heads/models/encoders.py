"""Encoders from smp and timm, with their feature levels read off the encoder, never typed.

``build_encoder("vgg16", in_channels=1)`` returns an :class:`Encoder` whose ``levels`` list the
``(stride, channels)`` of each feature map. A name registered in :data:`ENCODERS` comes first;
then any name smp knows (``resnet50``, ``vgg16``, ``efficientnet-b0`` …), and ``tu-<timm name>``
for any timm backbone.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from mmseg_heads.errors import UserError, load_failure
from mmseg_heads.models.levels import LevelSpec
from mmseg_heads.registry import Registry

#: Encoders of your own, by name: ``@ENCODERS.register("tiny")`` on a function
#: ``(in_channels: int, depth: int) -> nn.Module`` whose ``forward(x)`` returns a list of feature
#: maps, finest first (the input itself may come first, as in smp's encoders: it is dropped). The
#: levels' strides and channels are read off the network. They shadow smp's names.
ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")

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
            # The input itself (ResNet's first "feature") and smp's 0-channel placeholders for
            # stages a timm backbone lacks are not features.
            if feature is probe or feature.shape[1] == 0:
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
    """Build a registered, smp or timm encoder.

    Args:
        name: a name registered in :data:`ENCODERS`, an smp encoder name (``vgg16``,
            ``resnet50`` …) or ``tu-<timm model>``.
        in_channels: input channels; smp adapts the first convolution of pretrained weights.
        pretrained: ``none``, ``imagenet`` or a path to a local state dict file.
        depth: number of downsampling stages (5 gives strides up to 32).
    """
    if name in ENCODERS:
        return _registered_encoder(name, in_channels, pretrained, depth)
    local = pretrained not in ("none", "imagenet")
    try:
        if pretrained == "imagenet":
            backbone = _imagenet_encoder(name, in_channels, depth)
        else:
            # Local weights are 3-channel like smp's: load them into a 3-channel encoder, then let
            # smp adapt the first convolution to ``in_channels`` as it does for ImageNet weights.
            backbone = smp.encoders.get_encoder(
                name, in_channels=3 if local else in_channels, depth=depth, weights=None
            )
    except (KeyError, ValueError, RuntimeError) as exc:  # smp: KeyError; timm: RuntimeError
        raise UserError(_unknown_encoder_message(name, exc), field="encoder") from exc
    if local:
        _load_local_weights(backbone, Path(pretrained))
        if in_channels != 3:
            backbone.set_in_channels(in_channels, pretrained=True)
    return Encoder(backbone, in_channels, name)


def _registered_encoder(name: str, in_channels: int, pretrained: str, depth: int) -> Encoder:
    if pretrained == "imagenet":
        raise UserError(
            f"encoder {name!r} is registered in mmseg_heads (ENCODERS) and has no ImageNet weights; "
            "give a local state dict file (`pretrained: path/to/weights.pt`) or `pretrained: none`",
            field="pretrained",
        )
    backbone = ENCODERS.get(name)(in_channels=in_channels, depth=depth)
    if pretrained != "none":
        _load_local_weights(backbone, Path(pretrained))
    return Encoder(backbone, in_channels, name)


def encoder_names() -> list[str]:
    """Every encoder name a config may use, besides ``tu-<timm name>``."""
    return sorted(set(ENCODERS.names()) | set(smp.encoders.get_encoder_names()))


def encoder_name_problem(name: str) -> str | None:
    """Why ``name`` is not a buildable encoder name, or None: checked before any model is built."""
    if name in ENCODERS:
        return None
    if name.startswith("tu-"):
        import timm

        return None if timm.is_model(name[3:]) else f"timm has no model {name[3:]!r}"
    if name in smp.encoders.get_encoder_names():
        return None
    return _unknown_encoder_message(name, KeyError(name))


def _unknown_encoder_message(name: str, exc: Exception) -> str:
    if name.startswith("tu-"):
        return f"cannot build timm encoder {name!r}: {str(exc)[:200]}"
    known = encoder_names()
    if name in known:
        return f"cannot build encoder {name!r}: {str(exc)[:200]}"
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    return (
        f"unknown encoder {name!r}; {hint}use an smp encoder name (e.g. resnet50, vgg16, "
        "efficientnet-b0) or tu-<timm model name>"
    )


def _imagenet_encoder(name: str, in_channels: int, depth: int) -> nn.Module:
    """ImageNet weights from the local cache, else from the hub; offline, fail in seconds.

    Without a network the hub client retries for about half a minute: try the cache first, then
    check that the hub answers at all before downloading.
    """
    import huggingface_hub.constants as hub

    was_offline = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        return smp.encoders.get_encoder(
            name, in_channels=in_channels, depth=depth, weights=_imagenet_weights(name)
        )
    except OSError:
        pass  # not cached
    finally:
        hub.HF_HUB_OFFLINE = was_offline
    if was_offline or not _hub_reachable():
        raise UserError(
            f"ImageNet weights for {name!r} are not in the local cache and cannot be downloaded "
            "(offline); download them on a connected machine, or pass a local state dict file: "
            "`pretrained: path/to/weights.pt` (a torchvision/timm/smp state dict), or use "
            "`pretrained: none`",
            field="pretrained",
        )
    try:
        return smp.encoders.get_encoder(
            name, in_channels=in_channels, depth=depth, weights=_imagenet_weights(name)
        )
    except OSError as exc:
        raise UserError(
            f"cannot download ImageNet weights for {name!r}: {exc}", field="pretrained"
        ) from exc


def _imagenet_weights(name: str) -> str | bool:
    """smp's ``weights`` argument for ImageNet: timm encoders take True (their default tag)."""
    return True if name.startswith("tu-") else "imagenet"


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _matching_tensors(state: dict, own: dict) -> tuple[dict, str]:
    """The file's tensors that fit the encoder by name and shape, and the key prefix dropped.

    Whole-model files name the encoder's tensors under a prefix (unet-pytorch's ``vgg.`` and
    ``resnet.``, DDP's ``module.``, ``encoder.``); the prefix that matches most tensors wins.
    """

    def fitting(prefix: str) -> dict:
        return {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix)
            and k[len(prefix) :] in own
            and torch.is_tensor(v)
            and v.shape == own[k[len(prefix) :]].shape
        }

    # the first one or two dotted parts of every key ("vgg.", "model.encoder.")
    prefixes = {""} | {
        ".".join(k.split(".")[:depth]) + "."
        for k in state
        if isinstance(k, str)
        for depth in (1, 2)
        if k.count(".") >= depth
    }
    best = max(sorted(prefixes), key=lambda prefix: len(fitting(prefix)))
    return fitting(best), best


def _load_local_weights(backbone: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise UserError("weights file not found", file=path, field="pretrained")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"not a PyTorch weights file ({load_failure(exc)}); give a state dict saved with "
            "torch.save(model.state_dict(), path)",
            file=path,
            field="pretrained",
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError("expected a state dict (name -> tensor)", file=path, field="pretrained")
    own = backbone.state_dict()
    matching, prefix = _matching_tensors(state, own)
    if prefix:
        logging.getLogger(__name__).info(
            "%s: encoder weights read from the keys under %r", path, prefix
        )
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
