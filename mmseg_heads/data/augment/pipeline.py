"""The training sample path: resize, place the crop, warp a window around it, crop, then intensity.

For each sample, with draws from its own generator:

1. ``resize`` picks a scale factor (a target shorter side, or one drawn from a range);
2. the crop's centre is placed: with probability ``crop_foreground`` on a random foreground pixel
   of a task the sample is labelled for (a class drawn first, then a pixel, as nnU-Net does, so
   rare classes get crops too), otherwise uniformly;
3. a square window around that centre, just large enough for the geometric transforms to fill the
   crop, is cut (outside the image: 0 in images, ``ignore`` in labels) and warped by the resize
   and the geometric transforms in list order, the same draw for every modality and label;
4. the centre ``crop``² is kept, and the intensity transforms run on it in list order.

Warping a window instead of the whole image keeps the cost per sample near that of the crop, not
of the image (a 4000² aerial tile costs what a 256² crop costs).

With ``train.augment_on: gpu`` the loader stops after step 3's cut (:meth:`TrainTransform.window`:
the part of the window that lies on the image, resized, and where it starts in the window; every
window has the same side, :meth:`TrainTransform.window_side`), and
:class:`~mmseg_heads.data.augment.batched.BatchAugment` does the geometric transforms, the crop
and the intensity transforms on whole batches on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mmseg_heads.data.augment.base import (
    GeometricTransform,
    IntensityTransform,
    Tensors,
    chance,
    source_sides,
    stack,
    uniform,
    unstack,
)
from mmseg_heads.data.augment.batched import BatchAugment
from mmseg_heads.data.augment.geometric import HorizontalFlip, Scale, VerticalFlip
from mmseg_heads.data.augment.presets import build_transforms
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.data.transforms import round_up

#: ``augment_on: gpu`` window sides are rounded up to a multiple of this (a round number for
#: ``inspect``; only the part of a window on the image is sent, so the rounding costs at most a
#: band of image pixels).
WINDOW_MULTIPLE = 32


@dataclass
class TrainTransform:
    """Everything that turns a read sample into a training crop.

    Args:
        crop: side of the square training crop.
        geometric: geometric transforms, in order.
        intensity: intensity transforms, in order.
        crop_foreground: chance that a crop is centred near a labelled foreground pixel.
        resize: ``None`` (native size), a shorter side in pixels, or a ``[low, high]`` range of
            shorter sides drawn per sample.
        on: ``"cpu"``: all of it here; ``"gpu"``: only the resize and the window cut here, the
            rest by :meth:`batch_augment` on whole batches.
    """

    crop: int
    geometric: list[GeometricTransform] = field(default_factory=list)
    intensity: list[IntensityTransform] = field(default_factory=list)
    crop_foreground: float = 0.0
    resize: int | list[int] | None = None
    on: str = "cpu"

    @classmethod
    def from_train_config(cls, train: dict) -> TrainTransform:
        """Built from a validated ``train`` section (``train.hflip``/``vflip`` add flips last)."""
        transforms = build_transforms(train.get("augment", "none"))
        geometric = [t for t in transforms if isinstance(t, GeometricTransform)]
        intensity = [t for t in transforms if isinstance(t, IntensityTransform)]
        if train.get("hflip"):
            geometric.append(HorizontalFlip(p=0.5))
        if train.get("vflip"):
            geometric.append(VerticalFlip(p=0.5))
        return cls(
            crop=train["crop"],
            geometric=geometric,
            intensity=intensity,
            crop_foreground=train.get("crop_foreground", 0.0),
            resize=train.get("resize"),
            on=train.get("augment_on", "cpu"),
        )

    def batch_augment(self) -> BatchAugment | None:
        """What runs on whole batches with ``on="gpu"`` (``None`` with ``on="cpu"``)."""
        if self.on == "cpu":
            return None
        return BatchAugment(self.crop, self.geometric, self.intensity, self.window_side())

    def describe(self) -> str:
        """One line for ``inspect``: what runs, and where."""
        what = f"{len(self.geometric)} geometric, {len(self.intensity)} intensity transforms"
        if self.on == "cpu":
            return f"{what}, per sample in the loader's workers (augment_on: cpu)"
        return (
            f"{what}, on whole batches on the training device (augment_on: gpu); the loader "
            f"sends what lies on the image of a {self.window_side()}² window around each "
            f"{self.crop}² crop"
        )

    def window_side(self) -> int:
        """``on="gpu"``: the side of every window the loader cuts (after the resize), large enough
        for the geometric transforms to fill the crop."""
        return round_up(math.ceil(source_sides(self.geometric, self.crop)[0]), WINDOW_MULTIPLE)

    def __call__(
        self,
        images: Tensors,
        labels: Tensors,
        has_label: dict[str, bool],
        generator: torch.Generator,
    ) -> tuple[Tensors, Tensors]:
        factor, centre = self._place(images, labels, has_label, generator)
        return contiguous(*self._augment(images, labels, centre, factor, generator))

    def window(
        self,
        images: Tensors,
        labels: Tensors,
        has_label: dict[str, bool],
        generator: torch.Generator,
    ) -> tuple[Tensors, Tensors, tuple[int, int]]:
        """The loader's half of ``on="gpu"``: steps 1-2, then the part of the sample's
        ``window_side()``² window that lies on the image, resized, and where that part starts in
        the window (top, left). The rest of the window would be fill, which the batched warp
        treats as outside, so a window larger than the image costs what the image costs."""
        height, width = next(iter(images.values())).shape[-2:]
        factor, centre = self._place(images, labels, has_label, generator)
        window = self.window_side()
        source = math.ceil(window / factor)  # the window in input pixels
        top, left = round(centre[0] - source / 2), round(centre[1] - source / 2)
        # the centre lies on the image, so the window overlaps it
        rows = slice(max(top, 0), min(top + source, height))
        cols = slice(max(left, 0), min(left + source, width))
        images = {k: v[..., rows, cols] for k, v in images.items()}
        labels = {k: v[..., rows, cols] for k, v in labels.items()}
        scale = window / source
        origin = (round((rows.start - top) * scale), round((cols.start - left) * scale))
        if scale != 1:
            size = [round((r.stop - r.start) * scale) or 1 for r in (rows, cols)]
            resize, params = Scale(p=1.0), {"size": size}
            images = unstack(resize.apply_image(stack(images), params), images)
            labels = unstack(resize.apply_label(stack(labels), params), labels)
        return (*contiguous(images, labels), origin)

    def _place(
        self, images: Tensors, labels: Tensors, has_label: dict[str, bool], generator
    ) -> tuple[float, tuple[float, float]]:
        """Steps 1-2: this sample's resize factor and its crop's centre in input pixels."""
        height, width = next(iter(images.values())).shape[-2:]
        factor = self._resize_factor(height, width, generator)
        centre = self._centre(labels, has_label, (height, width), self.crop / factor, generator)
        return factor, centre

    def _augment(
        self,
        images: Tensors,
        labels: Tensors,
        centre: tuple[float, float],
        factor: float,
        generator: torch.Generator,
    ) -> tuple[Tensors, Tensors]:
        """Steps 3-4: warp a window around ``centre`` (resize first), crop, intensity."""
        chain = [Scale(p=1.0, range=[factor, factor], aspect=[1.0, 1.0])] if factor != 1 else []
        chain += self.geometric
        side = math.ceil(source_sides(chain, self.crop)[0])
        images, labels = cut_around(images, labels, centre, side)
        for transform in chain:
            images, labels = transform(images, labels, generator)
        images = {k: centre_crop(v, self.crop, 0.0) for k, v in images.items()}
        labels = {k: centre_crop(v, self.crop, IGNORE_INDEX) for k, v in labels.items()}
        for transform in self.intensity:
            images = transform(images, generator)
        return images, labels

    def _resize_factor(self, height: int, width: int, generator: torch.Generator) -> float:
        if self.resize is None:
            return 1.0
        if isinstance(self.resize, int):
            return self.resize / min(height, width)
        return uniform(generator, *self.resize) / min(height, width)

    def _centre(
        self,
        labels: Tensors,
        has_label: dict[str, bool],
        size: tuple[int, int],
        crop: float,
        generator: torch.Generator,
    ) -> tuple[float, float]:
        """Centre of the crop in input pixels; ``crop`` is the crop's side in input pixels."""
        if self.crop_foreground > 0 and chance(generator, self.crop_foreground):
            pixel = foreground_pixel(labels, has_label, generator)
            if pixel is not None:
                # anywhere within a quarter crop of the pixel, kept inside the image if it fits
                jitter = crop / 4
                return tuple(
                    _inside(p + uniform(generator, -jitter, jitter), crop, extent)
                    for p, extent in zip(pixel, size, strict=True)
                )
        return tuple(_uniform_position(extent, crop, generator) + crop / 2 for extent in size)


def _uniform_position(extent: int, crop: float, generator: torch.Generator) -> float:
    """Start of a crop placed uniformly; a crop larger than the image starts at 0 (padding after)."""
    if extent <= crop:
        return 0.0
    if crop == int(crop):
        return float(torch.randint(0, extent - int(crop) + 1, (), generator=generator))
    return uniform(generator, 0, extent - crop)


def _inside(centre: float, crop: float, extent: int) -> float:
    """Move a centre so its crop stays inside the image, where the image is larger than it."""
    if extent <= crop:
        return crop / 2
    return min(max(centre, crop / 2), extent - crop / 2)


def foreground_pixel(
    labels: Tensors, has_label: dict[str, bool], generator: torch.Generator
) -> tuple[int, int] | None:
    """A random foreground pixel: a task among those labelled that have foreground, then one of
    its foreground classes, then one of that class's pixels; ``None`` without foreground."""
    candidates = []
    for task, label in labels.items():
        if not has_label.get(task, True):
            continue
        classes = [c for c in torch.unique(label).tolist() if c not in (0, IGNORE_INDEX)]
        if classes:
            candidates.append((label, classes))
    if not candidates:
        return None
    label, classes = candidates[int(torch.randint(0, len(candidates), (), generator=generator))]
    value = classes[int(torch.randint(0, len(classes), (), generator=generator))]
    pixels = (label == value).nonzero()
    row, col = pixels[int(torch.randint(0, len(pixels), (), generator=generator))].tolist()
    return row + 0.5, col + 0.5


def contiguous(images: Tensors, labels: Tensors) -> tuple[Tensors, Tensors]:
    """The arrays as contiguous tensors (a sample a loader worker hands over)."""
    return (
        {k: v.contiguous() for k, v in images.items()},
        {k: v.contiguous() for k, v in labels.items()},
    )


def cut_around(
    images: Tensors, labels: Tensors, centre: tuple[float, float], side: int
) -> tuple[Tensors, Tensors]:
    """The ``side``² windows of every image and label map centred at ``centre`` (outside the
    image: 0 in images, ``ignore`` in labels)."""
    top, left = round(centre[0] - side / 2), round(centre[1] - side / 2)
    return (
        {k: cut(v, top, left, side, 0.0) for k, v in images.items()},
        {k: cut(v, top, left, side, IGNORE_INDEX) for k, v in labels.items()},
    )


def cut(array: torch.Tensor, top: int, left: int, side: int, fill: float) -> torch.Tensor:
    """The ``side``² window of ``array`` at (top, left); parts outside the image are ``fill``."""
    height, width = array.shape[-2:]
    if top >= 0 and left >= 0 and top + side <= height and left + side <= width:
        return array[..., top : top + side, left : left + side]
    out = torch.full((*array.shape[:-2], side, side), fill, dtype=array.dtype)
    rows = slice(max(top, 0), min(top + side, height))
    cols = slice(max(left, 0), min(left + side, width))
    if rows.start < rows.stop and cols.start < cols.stop:
        out[..., rows.start - top : rows.stop - top, cols.start - left : cols.stop - left] = array[
            ..., rows, cols
        ]
    return out


def centre_crop(array: torch.Tensor, side: int, fill: float) -> torch.Tensor:
    height, width = array.shape[-2:]
    return cut(array, (height - side) // 2, (width - side) // 2, side, fill)
