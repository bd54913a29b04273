"""What every augmentation shares: the registry, the two kinds of transform, random draws.

A transform is one registered class. Its ``options`` (schema fields) are its YAML parameters, so
adding one is one class in one file: the config schema, the did-you-mean hints and the reference
docs all read ``TRANSFORMS``. Two kinds:

- :class:`GeometricTransform` moves pixels. It is drawn once per sample and applied identically to
  every modality (bilinear) and every label map (nearest); pixels that come from outside the image
  are 0 in images (the mean after normalisation) and ``ignore`` in labels, never background.
- :class:`IntensityTransform` changes values of the images it selects (``modalities``, default
  all), each modality drawn on its own, and never touches labels.

Images are ``C×H×W`` float32 tensors, labels ``H×W`` int64 tensors; randomness comes from one
``torch.Generator`` per sample, so a sample's augmentation depends on its seed only.

Each transform also has a batched form for ``train.augment_on: gpu`` (:mod:`.batched`): a geometric
transform maps output coordinates back to input ones (:meth:`GeometricTransform.source_coords`), so
a batch's whole chain is one resampling; an intensity transform changes ``B×C×H×W`` images with one
draw per sample (:meth:`IntensityTransform.apply_batch`). A transform without them runs on the CPU
only (``augment_on: gpu`` then names it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mmseg_heads.registry import Registry
from mmseg_heads.schema import Field, ListOf, Node, Struct, ascending

Tensors = dict[str, torch.Tensor]

#: name -> transform class; ``train.augment`` entries are looked up here.
TRANSFORMS: Registry[type[Transform]] = Registry("augmentation")


def probability(default: float) -> Field:
    return Field(
        float, default=default, minimum=0.0, maximum=1.0, doc="chance of applying it to a sample"
    )


def value_range(default: Sequence[float], *, minimum: float, doc: str) -> ListOf:
    """A ``[low, high]`` option: both at least ``minimum``, low <= high."""
    return ListOf(
        Field(float, minimum=minimum),
        default=lambda: list(default),
        doc=doc,
        min_items=2,
        max_items=2,
        check=ascending,
    )


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from ``[low, high]``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def chance(generator: torch.Generator, p: float) -> bool:
    """True with probability ``p`` (always one draw, so the stream does not depend on ``p``)."""
    return float(torch.rand((), generator=generator)) < p


def uniform_batch(
    generator: torch.Generator, shape: int | tuple[int, ...], low: float, high: float
) -> torch.Tensor:
    """Floats drawn uniformly from ``[low, high]`` on the generator's device (one per sample)."""
    shape = (shape,) if isinstance(shape, int) else shape
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def chance_batch(generator: torch.Generator, count: int, p: float) -> torch.Tensor:
    """``count`` booleans, each true with probability ``p``, on the generator's device."""
    return torch.rand(count, generator=generator, device=generator.device) < p


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per sample, shaped to broadcast over a ``B×…`` tensor ``like``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


class Transform:
    """Base of every augmentation: ``options`` maps parameter names to schema nodes.

    Every transform has ``p`` (the chance it applies to a sample); subclasses add their own.
    ``__init__`` receives the validated options as keyword arguments.
    """

    kind: str = ""
    options: dict[str, Node] = {}
    default_p: float = 0.5

    def __init__(self, p: float | None = None, **options):
        self.p = self.default_p if p is None else p
        for key, value in options.items():
            setattr(self, key, value)

    @classmethod
    def schema_fields(cls) -> dict[str, Node]:
        return {"p": probability(cls.default_p), **cls.options}

    @classmethod
    def schema(cls) -> Struct:
        """The schema of this transform's YAML options (``p`` included)."""
        return Struct(cls.schema_fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.schema_fields())
        return f"{type(self).__name__}({fields})"

    @classmethod
    def batched(cls) -> bool:
        """Whether it has the batched form ``train.augment_on: gpu`` runs."""
        raise NotImplementedError


class GeometricTransform(Transform):
    """Moves pixels: one draw per sample, the same warp for every image and label map."""

    kind = "geometric"

    def source_side(self, side: float) -> float:
        """How large a square of the input must be for this transform to fill ``side``² of output.

        The pipeline cuts that window around the crop's centre before warping, so a rotation of a
        256² crop warps about 362² pixels rather than the whole image.
        """
        return side

    def __call__(
        self, images: Tensors, labels: Tensors, generator: torch.Generator
    ) -> tuple[Tensors, Tensors]:
        if not chance(generator, self.p):
            return images, labels
        image_stack, label_stack = stack(images), stack(labels)
        params = self.draw(generator, tuple(image_stack.shape[-2:]))
        image_stack = self.apply_image(image_stack, params)
        label_stack = self.apply_label(label_stack, params)
        return unstack(image_stack, images), unstack(label_stack, labels)

    def draw(self, generator: torch.Generator, size: tuple[int, int]) -> dict:
        """This sample's parameters (e.g. the angle), for an input of ``size`` (H, W)."""
        raise NotImplementedError

    def apply_image(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        """Warp all modalities' channels, stacked as ``C×H×W`` (bilinear, fill 0)."""
        raise NotImplementedError

    def apply_label(self, labels: torch.Tensor, params: dict) -> torch.Tensor:
        """Warp all label maps, stacked as ``T×H×W`` (nearest, fill ``ignore``)."""
        raise NotImplementedError

    # The batched form: parameters per sample as tensors, pixels moved by coordinates.

    @classmethod
    def batched(cls) -> bool:
        return cls.source_coords is not GeometricTransform.source_coords

    def draw_batch(
        self, generator: torch.Generator, sizes: torch.Tensor, extent: float
    ) -> dict[str, torch.Tensor]:
        """Each sample's parameters: ``sizes`` (B×2, height and width) are the canvases it warps,
        ``extent`` the side of the centred square of its output the batch will read."""
        return {}

    def source_coords(self, coords: torch.Tensor, params: dict) -> torch.Tensor:
        """Where this transform takes each output pixel from: ``coords`` are ``B×H×W×2`` (x, y) in
        pixels from the canvas centre, in its output; returns the same in its input."""
        raise NotImplementedError

    def resized(self, sizes: torch.Tensor, params: dict) -> torch.Tensor:
        """The canvases (B×2) after this transform (only a resize changes them)."""
        return sizes


class IntensityTransform(Transform):
    """Changes image values per modality; labels pass through untouched."""

    kind = "intensity"

    def __init__(self, p: float | None = None, modalities: list[str] | None = None, **options):
        super().__init__(p, **options)
        self.modalities = modalities

    @classmethod
    def schema_fields(cls) -> dict[str, Node]:
        return {
            **super().schema_fields(),
            "modalities": ListOf(
                Field(str), default=None, doc="modalities it applies to (default: all)"
            ),
        }

    def __call__(self, images: Tensors, generator: torch.Generator) -> Tensors:
        out = dict(images)
        for name, image in images.items():
            selected = self.modalities is None or name in self.modalities
            if selected and chance(generator, self.p):
                out[name] = self.apply(image, generator)
        return out

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One modality's ``C×H×W`` image, changed with draws from ``generator``."""
        raise NotImplementedError

    @classmethod
    def batched(cls) -> bool:
        return cls.apply_batch is not IntensityTransform.apply_batch

    def apply_batch(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One modality's ``B×C×H×W`` images, each changed with its own draw (all of them: the
        caller keeps the samples this transform skips)."""
        raise NotImplementedError


def stack(arrays: Tensors) -> torch.Tensor:
    """Every array of a dict as one ``N×H×W`` tensor (images' channels, or one map per task)."""
    return torch.cat([a if a.ndim == 3 else a[None] for a in arrays.values()])


def unstack(stacked: torch.Tensor, like: Tensors) -> Tensors:
    """Inverse of :func:`stack`: split ``stacked`` back into arrays shaped as in ``like``."""
    out, start = {}, 0
    for name, array in like.items():
        count = array.shape[0] if array.ndim == 3 else 1
        part = stacked[start : start + count]
        out[name] = part if array.ndim == 3 else part[0]
        start += count
    return out


def source_sides(transforms: list[GeometricTransform], crop: float) -> list[float]:
    """The side each transform of a chain must be given so that the chain fills ``crop``²: entry
    ``i`` is the input side of ``transforms[i]``, the last entry ``crop`` itself."""
    sides = [float(crop)]
    for transform in reversed(transforms):
        sides.insert(0, transform.source_side(sides[0]))
    return sides


def rotated_side(side: float, degrees: float) -> float:
    """Side of the square that still covers a ``side``² square rotated by up to ``degrees``."""
    angle = math.radians(min(abs(degrees), 45.0))
    return side * (math.cos(angle) + math.sin(angle))
