"""Intensity augmentations, applied after normalisation, per modality, never to labels.

Images reach augmentation normalised (``zscore`` MRI has negative values), while torchvision's
colour functions clamp to [0, 1]; so the MRI transforms are the few lines nnU-Net uses (they keep
the range or the statistics of the image), and colour jitter maps the image to [0, 1] and back
around torchvision's functions.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

from mmseg_heads.data.augment.base import (
    TRANSFORMS,
    IntensityTransform,
    per_sample,
    uniform,
    uniform_batch,
    value_range,
)
from mmseg_heads.schema import Field


@TRANSFORMS.register("brightness")
class Brightness(IntensityTransform):
    """Multiply by a factor (nnU-Net's multiplicative brightness)."""

    default_p = 0.15
    options = {"range": value_range([0.75, 1.25], minimum=0.0, doc="factor range")}

    def apply(self, image, generator):
        return image * uniform(generator, *self.range)

    def apply_batch(self, images, generator):
        return images * per_sample(uniform_batch(generator, len(images), *self.range), images)


@TRANSFORMS.register("contrast")
class Contrast(IntensityTransform):
    """Stretch about each channel's mean, then clip to the channel's former range."""

    default_p = 0.15
    options = {"range": value_range([0.75, 1.25], minimum=0.0, doc="factor range")}

    def apply(self, image, generator):
        return self._stretch(image, uniform(generator, *self.range))

    def apply_batch(self, images, generator):
        factor = uniform_batch(generator, len(images), *self.range)
        return self._stretch(images, per_sample(factor, images))

    @staticmethod
    def _stretch(image, factor):
        mean = image.mean(dim=(-2, -1), keepdim=True)
        low, high = _channel_range(image)
        return torch.clamp((image - mean) * factor + mean, low, high)


@TRANSFORMS.register("gamma")
class Gamma(IntensityTransform):
    """``x ** gamma`` on each channel scaled to [0, 1], then its mean and spread restored
    (nnU-Net's gamma with ``retain_stats``); ``invert`` applies it to the negated image."""

    default_p = 0.3
    options = {
        "range": value_range([0.7, 1.5], minimum=0.01, doc="gamma range"),
        "invert": Field(bool, default=False, doc="brighten darks instead of darkening brights"),
    }

    def apply(self, image, generator):
        return self._gamma(image, uniform(generator, *self.range))

    def apply_batch(self, images, generator):
        gamma = uniform_batch(generator, len(images), *self.range)
        return self._gamma(images, per_sample(gamma, images))

    def _gamma(self, image, gamma):
        x = -image if self.invert else image
        mean, std = x.mean(dim=(-2, -1), keepdim=True), x.std(dim=(-2, -1), keepdim=True)
        low, high = _channel_range(x)
        scaled = ((x - low) / (high - low).clamp_min(1e-7)) ** gamma
        scaled = (scaled - scaled.mean(dim=(-2, -1), keepdim=True)) / scaled.std(
            dim=(-2, -1), keepdim=True
        ).clamp_min(1e-7)
        x = scaled * std + mean
        return -x if self.invert else x


@TRANSFORMS.register("noise")
class GaussianNoise(IntensityTransform):
    """Add Gaussian noise whose standard deviation is drawn from ``std``."""

    default_p = 0.15
    options = {"std": value_range([0.0, 0.1], minimum=0.0, doc="noise sd range")}

    def apply(self, image, generator):
        sd = uniform(generator, *self.std)
        return image + sd * torch.randn(image.shape, generator=generator)

    def apply_batch(self, images, generator):
        sd = per_sample(uniform_batch(generator, len(images), *self.std), images)
        return images + sd * torch.randn(images.shape, generator=generator, device=images.device)


@TRANSFORMS.register("blur")
class GaussianBlur(IntensityTransform):
    """Gaussian blur (torchvision's) with a sigma drawn from ``sigma``."""

    default_p = 0.2
    options = {"sigma": value_range([0.5, 1.0], minimum=0.01, doc="sigma range, pixels")}

    def apply(self, image, generator):
        sigma = uniform(generator, *self.sigma)
        kernel = 2 * math.ceil(3 * sigma) + 1
        return TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])

    def apply_batch(self, images, generator):
        # torchvision's kernel (radius ceil(3 sigma), reflect padding) with a sigma per sample:
        # every kernel padded with zeros to the widest the range allows, one depthwise convolution
        count, channels, height, width = images.shape
        sigma = uniform_batch(generator, count, *self.sigma).repeat_interleave(channels)[:, None]
        radius = math.ceil(3 * self.sigma[1])
        offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
        weights = weights * (offsets.abs() <= torch.ceil(3 * sigma))
        weights = weights / weights.sum(-1, keepdim=True)
        x = images.reshape(1, count * channels, height, width)
        x = torch.nn.functional.pad(x, [radius] * 4, mode="reflect")
        groups = count * channels
        x = torch.nn.functional.conv2d(x, weights[:, None, None, :], groups=groups)
        x = torch.nn.functional.conv2d(x, weights[:, None, :, None], groups=groups)
        return x.reshape(images.shape)


@TRANSFORMS.register("color_jitter")
class ColorJitter(IntensityTransform):
    """torchvision's brightness, contrast, saturation and hue jitter, for 3-channel modalities.

    The image is mapped to [0, 1] with one minimum and maximum over its channels (which keeps its
    hues), jittered in a random order as ``transforms.v2.ColorJitter`` does, and mapped back.
    Modalities without 3 channels are left alone.
    """

    default_p = 0.8
    options = {
        "brightness": Field(
            float, default=0.2, minimum=0.0, maximum=1.0, doc="factor in [1-b, 1+b]"
        ),
        "contrast": Field(float, default=0.2, minimum=0.0, maximum=1.0, doc="factor in [1-c, 1+c]"),
        "saturation": Field(
            float, default=0.2, minimum=0.0, maximum=1.0, doc="factor in [1-s, 1+s]"
        ),
        "hue": Field(float, default=0.05, minimum=0.0, maximum=0.5, doc="shift in [-h, h]"),
    }

    def apply(self, image, generator):
        if image.shape[0] != 3:
            return image
        low, high = image.min(), image.max()
        span = (high - low).clamp_min(1e-7)
        x = (image - low) / span
        steps = {
            "brightness": (TF.adjust_brightness, 1.0, self.brightness),
            "contrast": (TF.adjust_contrast, 1.0, self.contrast),
            "saturation": (TF.adjust_saturation, 1.0, self.saturation),
            "hue": (TF.adjust_hue, 0.0, self.hue),
        }
        for index in torch.randperm(len(steps), generator=generator).tolist():
            function, centre, width = list(steps.values())[index]
            if width > 0:
                x = function(x, uniform(generator, centre - width, centre + width))
        return x * span + low

    def apply_batch(self, images, generator):
        if images.shape[1] != 3:
            return images
        count = len(images)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-7)
        x = (images - low) / span
        steps = [
            (_brightness, 1.0, self.brightness),
            (_contrast, 1.0, self.contrast),
            (_saturation, 1.0, self.saturation),
            (_hue, 0.0, self.hue),
        ]
        factors = [uniform_batch(generator, count, c - w, c + w) for _, c, w in steps]
        # a random order per sample: at each position, every step runs and the samples whose
        # order puts it there keep its result
        order = torch.rand((count, len(steps)), generator=generator, device=images.device)
        order = order.argsort(-1)
        for position in range(len(steps)):
            for index, (function, _, width) in enumerate(steps):
                if width > 0:
                    chosen = per_sample(order[:, position] == index, x)
                    x = torch.where(chosen, function(x, per_sample(factors[index], x)), x)
        return x * span + low


# torchvision's colour adjustments of [0, 1] images, with a factor per sample (theirs take one
# float): the same blends, the same ITU-R 601 grey.


def _grey(x: torch.Tensor) -> torch.Tensor:
    return TF.rgb_to_grayscale(x)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _grey(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (x * factor + mean * (1 - factor)).clamp(0, 1)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor + _grey(x) * (1 - factor)).clamp(0, 1)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    # torchvision's own RGB <-> HSV conversions (private; tests/test_augment_batched.py compares
    # the result with TF.adjust_hue, so a change of them shows there)
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    hue, saturation, value = _rgb_to_hsv(x).unbind(dim=-3)
    hue = (hue + shift[:, 0]).remainder(1.0)
    return _hsv_to_rgb(torch.stack((hue, saturation, value), dim=-3))


def _channel_range(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = image.flatten(-2)
    return flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
