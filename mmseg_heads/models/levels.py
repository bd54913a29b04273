"""``LevelSpec``: what every module downstream sizes itself from (timm's feature_info, detectron2's ShapeSpec)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class LevelSpec:
    """One feature level: ``stride`` (input size / feature size) and ``channels``."""

    stride: int
    channels: int

    def __str__(self) -> str:
        return f"{self.channels}@/{self.stride}"


def by_stride(levels: list[LevelSpec]) -> dict[int, LevelSpec]:
    return {level.stride: level for level in levels}
