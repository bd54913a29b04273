"""``train.augment``: a preset name or an ordered list of registered transforms, validated.

Written in YAML as a list whose entries are a transform's name or ``{name: {options}}``::

    augment:
      - rotate: {degrees: 15, p: 0.3}
      - gamma: {range: [0.7, 1.5], modalities: [LGE]}
      - hflip

or as one of the :data:`PRESETS` (``none``, ``light``, ``medical``, ``natural``).
"""

from __future__ import annotations

from typing import Any

from mmseg_heads.data.augment.base import TRANSFORMS, Transform
from mmseg_heads.errors import UserError
from mmseg_heads.schema import Field, Node, validate

#: Documented expansions of the preset names (docs/training.md explains when to use each).
PRESETS: dict[str, list[dict]] = {
    "none": [],
    # small changes any data set tolerates
    "light": [
        {"scale": {"range": [0.85, 1.18], "p": 0.5}},
        {"rotate": {"degrees": 10.0, "p": 0.3}},
        {"brightness": {"range": [0.85, 1.15], "p": 0.2}},
        {"contrast": {"range": [0.85, 1.15], "p": 0.2}},
    ],
    # nnU-Net's 2-D augmentation: rotation, scaling, noise, blur, brightness, contrast, gamma
    "medical": [
        {"rotate": {"degrees": 180.0, "p": 0.2}},
        {"scale": {"range": [0.7, 1.4], "p": 0.2}},
        {"elastic": {"displacement": 8.0, "spacing": 32.0, "p": 0.1}},
        {"noise": {"std": [0.0, 0.1], "p": 0.1}},
        {"blur": {"sigma": [0.5, 1.0], "p": 0.2}},
        {"brightness": {"range": [0.75, 1.25], "p": 0.15}},
        {"contrast": {"range": [0.75, 1.25], "p": 0.15}},
        {"gamma": {"range": [0.7, 1.5], "invert": True, "p": 0.1}},
        {"gamma": {"range": [0.7, 1.5], "p": 0.3}},
    ],
    # MMSegmentation's RandomResize 0.5-2.0 (with unet-pytorch's aspect jitter) and colour jitter
    "natural": [
        {"scale": {"range": [0.5, 2.0], "aspect": [0.75, 1.33], "p": 1.0}},
        {
            "color_jitter": {
                "brightness": 0.125,
                "contrast": 0.5,
                "saturation": 0.5,
                "hue": 0.05,
                "p": 0.8,
            }
        },
        {"blur": {"sigma": [0.1, 1.0], "p": 0.1}},
    ],
}


def _entry_name(entry: Any) -> tuple[str | None, Any]:
    """``(name, options)`` of one list entry, or ``(None, None)`` when it has neither form."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        return str(name), {} if options is None else options
    return None, None


class AugmentSchema(Node):
    """Schema node of ``train.augment``: a preset name, or a list of transform entries."""

    doc = (
        "a preset (none | light | medical | natural) or a list of transforms, each `name` or "
        "`{name: {options}}` (docs/training.md)"
    )
    default = "none"

    def validate(self, value, path, problems):
        if isinstance(value, str):
            return Field(str, choices=tuple(PRESETS)).validate(value, path, problems)
        if not isinstance(value, list):
            problems.append(
                UserError(
                    f"expected a preset name ({', '.join(PRESETS)}) or a list of transforms, "
                    f"got {type(value).__name__} {value!r}",
                    field=path,
                )
            )
            return value
        out = []
        for index, entry in enumerate(value):
            where = f"{path}[{index}]"
            name, options = _entry_name(entry)
            if name is None:
                problems.append(
                    UserError(
                        "an entry is a transform's name or one `{name: {options}}` mapping, "
                        f"got {entry!r}",
                        field=where,
                    )
                )
            elif name not in TRANSFORMS:
                Field(str, choices=tuple(TRANSFORMS.names())).validate(name, where, problems)
            else:
                schema = TRANSFORMS.get(name).schema()
                out.append({name: schema.validate(options, f"{where}.{name}", problems)})
        return out

    def describe(self) -> str:
        return "preset name or list of transforms"


def expand(augment: str | list[dict]) -> list[dict]:
    """A validated ``train.augment`` as its list of ``{name: {options}}`` entries."""
    return PRESETS[augment] if isinstance(augment, str) else augment


def build_transforms(augment: str | list[dict]) -> list[Transform]:
    """The transform objects of a validated ``train.augment``, in order."""
    transforms = []
    for entry in expand(augment):
        name, options = _entry_name(entry)
        transform = TRANSFORMS.get(name)
        # fills a preset entry's defaults; a preset that breaks its own schema fails here
        filled = validate(transform.schema(), options, file=f"train.augment: {name}")
        transforms.append(transform(**filled))
    return transforms


def augment_modalities(augment: str | list[dict]) -> list[tuple[int, str, list[str]]]:
    """``(index, name, modalities)`` of every entry that selects modalities (for cross-checks)."""
    out = []
    for index, entry in enumerate(expand(augment)):
        name, options = _entry_name(entry)
        if isinstance(options, dict) and options.get("modalities"):
            out.append((index, name, options["modalities"]))
    return out
