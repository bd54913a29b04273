"""Geometric augmentations: torchvision's functional warps, one draw shared by every array.

Each class resamples images bilinearly (fill 0) and labels by nearest neighbour (fill ``ignore``)
through ``torchvision.transforms.v2.functional``, so class values never blend and pixels from
outside the image never count as background.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mmseg_heads.data.augment.base import (
    TRANSFORMS,
    GeometricTransform,
    rotated_side,
    uniform,
    uniform_batch,
    value_range,
)
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.schema import Field

BILINEAR, NEAREST = InterpolationMode.BILINEAR, InterpolationMode.NEAREST
# torch's plain "nearest" resize samples half a pixel off the bilinear grid; "nearest-exact" does not
NEAREST_EXACT = InterpolationMode.NEAREST_EXACT


class _Flip(GeometricTransform):
    axis = -1

    def draw(self, generator, size):
        return {}

    def apply_image(self, images, params):
        return images.flip(self.axis)

    apply_label = apply_image

    def source_coords(self, coords, params):
        mirror = torch.tensor([-1.0, 1.0] if self.axis == -1 else [1.0, -1.0], device=coords.device)
        return coords * mirror


@TRANSFORMS.register("hflip")
class HorizontalFlip(_Flip):
    """Mirror left-right."""

    axis = -1


@TRANSFORMS.register("vflip")
class VerticalFlip(_Flip):
    """Mirror top-bottom."""

    axis = -2


@TRANSFORMS.register("affine")
class Affine(GeometricTransform):
    """Rotation, translation, zoom and shear about the centre, on a canvas of the same size."""

    options = {
        "degrees": Field(float, default=15.0, minimum=0.0, maximum=180.0, doc="largest |angle|"),
        "translate": Field(
            float, default=0.0625, minimum=0.0, maximum=0.5, doc="largest shift, share of the side"
        ),
        "scale": value_range([0.9, 1.1], minimum=0.05, doc="zoom factor range (>1 enlarges)"),
        "shear": Field(float, default=0.0, minimum=0.0, maximum=45.0, doc="largest |shear| angle"),
    }

    def draw(self, generator, size):
        height, width = size
        shift = self.translate
        return {
            "angle": uniform(generator, -self.degrees, self.degrees),
            "translate": [
                round(uniform(generator, -shift, shift) * width),
                round(uniform(generator, -shift, shift) * height),
            ],
            "scale": uniform(generator, *self.scale),
            "shear": [uniform(generator, -self.shear, self.shear), 0.0],
        }

    def apply_image(self, images, params):
        return TF.affine(images, **params, interpolation=BILINEAR, fill=0.0)

    def draw_batch(self, generator, sizes, extent):
        count = len(sizes)
        shift = uniform_batch(generator, (count, 2), -self.translate, self.translate)
        return {
            "angle": uniform_batch(generator, count, -self.degrees, self.degrees),
            "translate": (shift * sizes.flip(-1)).round(),  # x by the width, y by the height
            "scale": uniform_batch(generator, count, *self.scale),
            "shear": uniform_batch(generator, count, -self.shear, self.shear),
        }

    def source_coords(self, coords, params):
        # torchvision's inverse affine matrix (_get_inverse_affine_matrix, centre 0, shear in x),
        # one per sample: input = M⁻¹ (output − translate)
        angle, shear = torch.deg2rad(params["angle"]), torch.deg2rad(params["shear"])
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        a, b = cos, -cos * tan - sin
        c, d = sin, -sin * tan + cos
        inverse = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
        inverse = inverse / params["scale"].view(-1, 1, 1)
        moved = coords - params["translate"].view(-1, 1, 1, 2)
        return torch.einsum("bij,bhwj->bhwi", inverse, moved)

    def apply_label(self, labels, params):
        return TF.affine(labels, **params, interpolation=NEAREST, fill=IGNORE_INDEX)

    def source_side(self, side):
        side = side / self.scale[0] * (1 + math.tan(math.radians(self.shear)))
        return rotated_side(side, self.degrees) + 2 * self.translate * side


@TRANSFORMS.register("rotate")
class Rotate(Affine):
    """Rotation about the centre by an angle drawn from ``[-degrees, degrees]``."""

    options = {
        "degrees": Field(float, default=15.0, minimum=0.0, maximum=180.0, doc="largest |angle|")
    }
    translate, scale, shear = 0.0, (1.0, 1.0), 0.0


@TRANSFORMS.register("scale")
class Scale(GeometricTransform):
    """Resize by a random factor (scale jitter; before the crop, a random resized crop).

    The image changes size: ``range: [0.5, 2.0]`` is MMSegmentation's ``RandomResize`` ratio range;
    ``aspect`` stretches one side against the other (unet-pytorch's jitter).
    """

    default_p = 1.0
    options = {
        "range": value_range([0.75, 1.25], minimum=0.05, doc="resize factor range"),
        "aspect": value_range([1.0, 1.0], minimum=0.1, doc="width/height stretch range"),
    }

    def draw(self, generator, size):
        factor = uniform(generator, *self.range)
        stretch = math.sqrt(uniform(generator, *self.aspect))
        height, width = size
        return {
            "size": [
                max(1, round(height * factor / stretch)),
                max(1, round(width * factor * stretch)),
            ]
        }

    def apply_image(self, images, params):
        return TF.resize(images, params["size"], interpolation=BILINEAR, antialias=True)

    def apply_label(self, labels, params):
        return TF.resize(labels, params["size"], interpolation=NEAREST_EXACT)

    def draw_batch(self, generator, sizes, extent):
        factor = uniform_batch(generator, len(sizes), *self.range)
        stretch = torch.sqrt(uniform_batch(generator, len(sizes), *self.aspect))
        return {"factors": torch.stack([factor / stretch, factor * stretch], -1)}  # height, width

    def resized(self, sizes, params):
        return sizes * params["factors"]

    def source_coords(self, coords, params):
        return coords / params["factors"].flip(-1).view(-1, 1, 1, 2)

    def source_side(self, side):
        stretch = math.sqrt(max(self.aspect[1], 1 / self.aspect[0]))
        return side * stretch / self.range[0]


@TRANSFORMS.register("elastic")
class Elastic(GeometricTransform):
    """Smooth random deformation: control points ``spacing`` px apart move up to ``displacement``
    px; the field between them is interpolated (as a B-spline deformation would be)."""

    default_p = 0.2
    options = {
        "displacement": Field(float, default=8.0, minimum=0.0, doc="largest shift in pixels"),
        "spacing": Field(float, default=32.0, minimum=2.0, doc="pixels between control points"),
    }

    def draw(self, generator, size):
        height, width = size
        grid = (
            max(2, math.ceil(height / self.spacing) + 1),
            max(2, math.ceil(width / self.spacing) + 1),
        )
        coarse = torch.rand((1, 2, *grid), generator=generator) * 2 - 1
        field = torch.nn.functional.interpolate(
            coarse, size=size, mode="bicubic", align_corners=True
        )
        # pixels -> grid_sample's [-1, 1] coordinates, x then y, as torchvision's elastic takes it
        scale = torch.tensor([2.0 / width, 2.0 / height]).view(1, 1, 1, 2)
        return {"displacement": field.permute(0, 2, 3, 1) * self.displacement * scale}

    def apply_image(self, images, params):
        return TF.elastic(images, params["displacement"], interpolation=BILINEAR, fill=0.0)

    def apply_label(self, labels, params):
        return TF.elastic(labels, params["displacement"], interpolation=NEAREST, fill=IGNORE_INDEX)

    def draw_batch(self, generator, sizes, extent):
        # Control points `spacing` apart over the square the batch reads, at a random phase (the
        # loader's grid starts at its canvas's corner, a phase that varies with the image size).
        points = math.ceil(extent / self.spacing) + 3
        count = len(sizes)
        return {
            "coarse": uniform_batch(generator, (count, 2, points, points), -1.0, 1.0),
            "phase": uniform_batch(generator, (count, 2), -0.5, 0.5) * self.spacing,
        }

    def source_coords(self, coords, params):
        points = params["coarse"].shape[-1]
        # pixels -> grid_sample's [-1, 1] over the control points (align_corners: on the points)
        index = (coords - params["phase"].view(-1, 1, 1, 2)) / self.spacing + (points - 1) / 2
        where = index * (2 / (points - 1)) - 1
        field = torch.nn.functional.grid_sample(
            params["coarse"], where, mode="bicubic", padding_mode="border", align_corners=True
        )
        return coords + field.permute(0, 2, 3, 1) * self.displacement

    def source_side(self, side):
        return side + 2 * self.displacement
