"""Class colours: the default palette, and the data spec's ``colors`` (``[r, g, b]`` or ``"#rrggbb"``).

One palette per task colours what shows classes: predicted palette PNGs, overlays and the report's
sample figures. :attr:`mmseg_heads.data.spec.TaskSpec.palette` is :func:`task_palette` of the
task's classes and ``colors``. A base module (like ``schema``): ``data``, ``engine`` and ``report``
all colour classes, and ``report`` may import nothing but the base.
"""

from __future__ import annotations

import colorsys
import re
from typing import Any

from mmseg_heads.errors import UserError
from mmseg_heads.schema import Node

RGB = tuple[int, int, int]

#: Colours of classes 1, 2, … (class 0, background, is black); more classes cycle through hues.
BASE_COLOURS: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_SHORT_HEX = re.compile(r"^#?([0-9a-fA-F]{3})$")
_BARE_HEX = re.compile(r"^[0-9a-fA-F]{6}$")


def default_palette(num_classes: int) -> list[RGB]:
    """Distinct RGB colours, one per class; class 0 is black."""
    colours = [(0, 0, 0)]
    for index in range(1, num_classes):
        if index <= len(BASE_COLOURS):
            colours.append(BASE_COLOURS[index - 1])
        else:  # golden-ratio hue steps keep neighbours apart
            hue = (index * 0.618033988749895) % 1.0
            r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
            colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def _hex_hint(text: str) -> str:
    """A "did you mean" for the usual slips: a missing ``#``, or CSS's 3-digit short form."""
    if _BARE_HEX.match(text):
        return f" (did you mean '#{text.lower()}'?)"
    short = _SHORT_HEX.match(text)
    if short:
        return f" (did you mean '#{''.join(c * 2 for c in short.group(1).lower())}'?)"
    return ""


def colour_problem(value: Any) -> str | None:
    """Why ``value`` is not a colour (``[r, g, b]`` of whole numbers 0..255, or ``"#rrggbb"``);
    ``None`` when it is one."""
    if value is None:
        # `scar: #ffff00` unquoted: YAML reads everything from `#` on as a comment.
        return (
            'no colour given; quote a hex colour ("#ffff00"): unquoted, YAML reads # as a comment'
        )
    if isinstance(value, str):
        if HEX_COLOUR.match(value):
            return None
        return f"{value!r} is not a '#rrggbb' colour{_hex_hint(value)}"
    if not isinstance(value, list):
        return f'expected [r, g, b] or "#rrggbb", got {type(value).__name__} {value!r}'
    if len(value) != 3:
        return f"expected [r, g, b], got {len(value)} values {value!r}"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return f"expected whole numbers 0..255, got {value!r}"
    if not all(0 <= v <= 255 for v in value):
        return f"values must be 0..255, got {value!r}"
    return None


def as_rgb(value: str | list[int]) -> RGB:
    """A validated colour (see :func:`colour_problem`) as an ``(r, g, b)`` tuple."""
    if isinstance(value, str):
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
    return tuple(int(v) for v in value)


def task_palette(classes: tuple[str, ...] | list[str], colors: dict | None) -> list[RGB]:
    """One colour per class: ``colors[name]`` where given, else the default palette's colour of
    that class index (so listing one class never moves the others' colours)."""
    palette = default_palette(len(classes))
    for index, name in enumerate(classes):
        if colors and name in colors:
            palette[index] = as_rgb(colors[name])
    return palette


class Colour(Node):
    """Schema node of one colour: ``[r, g, b]`` (whole numbers 0..255) or ``"#rrggbb"``."""

    def validate(self, value, path, problems):
        message = colour_problem(value)
        if message:
            problems.append(UserError(message, field=path))
        return value

    def describe(self) -> str:
        return '[r, g, b] or "#rrggbb"'
