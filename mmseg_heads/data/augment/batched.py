"""``train.augment_on: gpu``: the augmentation of whole batches on the training device.

The loader then only resizes and cuts each sample's window around its crop centre
(:class:`~mmseg_heads.data.augment.pipeline.TrainTransform` with ``on="gpu"``); here, per batch:

1. every geometric transform draws its parameters per sample, in list order (a resize changes the
   canvas the later ones see, as on the loader);
2. the chain is composed into one sampling grid: each pixel of the ``crop``² output is mapped back
   through the transforms in reverse order to a point of the window;
3. the window is resampled once on that grid: images bilinearly (outside: 0), labels by nearest
   neighbour (outside: ``ignore``, never background);
4. the intensity transforms run per modality in list order, one draw per sample.

It is the loader's augmentation in distribution (``tests/test_augment_batched.py``), not draw for
draw: one resampling instead of one per transform (sharper), no anti-aliasing when a resize
shrinks, and elastic control points at a random phase rather than at the canvas's corner.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmseg_heads.data.augment.base import (
    GeometricTransform,
    IntensityTransform,
    Tensors,
    chance_batch,
    per_sample,
    source_sides,
)
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.errors import UserError


class BatchAugment:
    """Geometric then intensity transforms on collated ``B×C×S×S`` windows, cropped to ``crop``².

    Args:
        crop: side of the output.
        geometric: geometric transforms, in order (each with a batched form).
        intensity: intensity transforms, in order (each with a batched form).
        window: side of the square each sample's output is read from (the loader's
            ``TrainTransform.window_side()``).

    Raises:
        UserError: a transform has no batched form (a user's own registered class).
    """

    def __init__(
        self,
        crop: int,
        geometric: list[GeometricTransform],
        intensity: list[IntensityTransform],
        window: int,
    ):
        for transform in [*geometric, *intensity]:
            if not transform.batched():
                raise UserError(
                    f"{type(transform).__name__} has no batched form (source_coords / "
                    "apply_batch): use augment_on: cpu, or give it one",
                    field="train.augment_on",
                )
        self.crop, self.geometric, self.intensity = crop, geometric, intensity
        self.window = window
        sides = source_sides(geometric, crop)
        # the canvas the first transform warps, as the loader's (unpadded) window: an affine's
        # `translate` is a share of it; then the side of the centred square each transform's
        # output is read over
        self.canvas, self.extents = sides[0], sides[1:]

    def __call__(
        self,
        images: Tensors,
        labels: Tensors,
        generator: torch.Generator,
        origin: torch.Tensor | None = None,
    ) -> tuple[Tensors, Tensors]:
        """Augmented ``crop``² batches of ``images`` (``B×C×H×W`` per modality) and ``labels``
        (``B×H×W`` per task); draws come from ``generator``, on the tensors' device.

        Each sample's arrays hold the part of its window that lies on its image, starting at
        ``origin`` (``B×2``: top, left, in window pixels; ``None``: the whole window); the rest
        of the window, and any padding, reads as outside."""
        grid = self._grid(next(iter(images.values())), generator, origin)
        images = unstack(resample(stack(images), grid, "bilinear", 0.0), images)
        maps = resample(torch.stack(list(labels.values()), 1), grid, "nearest", IGNORE_INDEX)
        labels = {task: maps[:, index] for index, task in enumerate(labels)}
        for transform in self.intensity:
            images = self._intensity(transform, images, generator)
        return images, labels

    def _grid(
        self, like: torch.Tensor, generator: torch.Generator, origin: torch.Tensor | None
    ) -> torch.Tensor:
        """``B×crop×crop×2``: where each output pixel reads the arrays, in grid_sample's units."""
        count, height, width = len(like), like.shape[-2], like.shape[-1]
        sizes = like.new_full((count, 2), self.canvas)
        draws = []
        for transform, extent in zip(self.geometric, self.extents, strict=True):
            applied = chance_batch(generator, count, transform.p)
            params = transform.draw_batch(generator, sizes, extent)
            sizes = torch.where(applied[:, None], transform.resized(sizes, params), sizes)
            draws.append((transform, applied, params))
        coords = centred_pixels(self.crop, count, like.device)
        for transform, applied, params in reversed(draws):
            moved = transform.source_coords(coords, params)
            coords = torch.where(per_sample(applied, coords), moved, coords)
        # pixels from the window's centre -> from the array's corner -> [-1, 1] at the array's
        # outer edges (align_corners=False)
        corner = coords + self.window / 2
        if origin is not None:
            corner = corner - origin.flip(-1).to(corner).view(-1, 1, 1, 2)  # (top, left) -> x, y
        return corner / like.new_tensor([width / 2, height / 2]) - 1

    @staticmethod
    def _intensity(
        transform: IntensityTransform, images: Tensors, generator: torch.Generator
    ) -> Tensors:
        out = dict(images)
        for name, image in images.items():
            if transform.modalities is None or name in transform.modalities:
                applied = chance_batch(generator, len(image), transform.p)
                changed = transform.apply_batch(image, generator)
                out[name] = torch.where(per_sample(applied, image), changed, image)
        return out


def centred_pixels(side: int, count: int, device: torch.device) -> torch.Tensor:
    """``count×side×side×2`` pixel centres (x, y) of a ``side``² square, from its centre."""
    axis = torch.arange(side, device=device, dtype=torch.float32) - (side - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack((x, y), -1).expand(count, side, side, 2)


def resample(stacked: torch.Tensor, grid: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
    """``stacked`` (``B×N×S×S``) read at ``grid``; points outside the window are ``fill``."""
    out = F.grid_sample(stacked.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    if fill:
        outside = (grid.abs() > 1).any(-1)[:, None]
        out = out.masked_fill(outside, fill)
    return out.to(stacked.dtype)


def stack(arrays: Tensors) -> torch.Tensor:
    """A batch's modalities as one ``B×C×H×W`` tensor, channels in dict order."""
    return torch.cat(list(arrays.values()), 1)


def unstack(stacked: torch.Tensor, like: Tensors) -> Tensors:
    """Inverse of :func:`stack`: ``stacked``'s channels split as the arrays of ``like`` are."""
    sizes = [array.shape[1] for array in like.values()]
    return dict(zip(like, stacked.split(sizes, dim=1), strict=True))
