"""Training augmentation: registered transforms, presets, and the per-sample pipeline.

- :mod:`.base`: the registry ``TRANSFORMS`` and the geometric / intensity base classes;
- :mod:`.geometric`, :mod:`.intensity`: the transforms (a new one is one class there);
- :mod:`.presets`: ``train.augment`` presets and its schema node;
- :mod:`.pipeline`: :class:`TrainTransform`, resize + foreground-aware crop + transforms.
"""

from mmseg_heads.data.augment import geometric, intensity  # noqa: F401  (register the transforms)
from mmseg_heads.data.augment.base import TRANSFORMS, GeometricTransform, IntensityTransform
from mmseg_heads.data.augment.pipeline import TrainTransform
from mmseg_heads.data.augment.presets import PRESETS, AugmentSchema, build_transforms, expand

__all__ = [
    "PRESETS",
    "TRANSFORMS",
    "AugmentSchema",
    "GeometricTransform",
    "IntensityTransform",
    "TrainTransform",
    "build_transforms",
    "expand",
]
