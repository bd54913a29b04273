"""``train.augment_on: gpu``: the batched transforms follow torchvision's conventions exactly, match
the loader's path in distribution, and the trainer feeds the model their crops (on the CPU device
here; tests/test_cuda.py runs them on a GPU)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from mmseg_heads.config import load_config
from mmseg_heads.data.augment import TrainTransform, build_transforms
from mmseg_heads.data.augment.base import IntensityTransform, uniform_batch
from mmseg_heads.data.augment.batched import BatchAugment, centred_pixels, resample
from mmseg_heads.data.augment.intensity import _brightness, _contrast, _hue, _saturation
from mmseg_heads.data.dataset import collate
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _one(name: str, **options):
    (transform,) = build_transforms([{name: {"p": 1.0, **options}}])
    return transform


def _warp(transform, image: torch.Tensor, params: dict) -> torch.Tensor:
    side = image.shape[-1]
    coords = transform.source_coords(centred_pixels(side, 1, image.device), params)
    return resample(image[None], coords / (side / 2), "bilinear", 0.0)[0]


@pytest.mark.parametrize(
    "angle,translate,scale,shear", [(30.0, [5.0, -3.0], 1.2, 10.0), (-75.0, [0.0, 4.0], 0.8, 0.0)]
)
def test_affine_follows_torchvision_exactly(angle, translate, scale, shear):
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    params = {
        "angle": torch.tensor([angle]),
        "translate": torch.tensor([translate]),
        "scale": torch.tensor([scale]),
        "shear": torch.tensor([shear]),
    }
    ours = _warp(_one("affine"), image, params)
    options = {"angle": angle, "translate": translate, "scale": scale, "shear": [shear, 0.0]}
    bilinear = TF.InterpolationMode.BILINEAR
    theirs = TF.affine(image, **options, fill=0.0, interpolation=bilinear)
    # where every pixel read lies inside (torchvision multiplies the seam by its fill mask again)
    inside = TF.affine(torch.ones(1, 48, 48), **options, fill=0.0, interpolation=bilinear)[0]
    inside = inside > 1 - 1e-6
    assert inside.float().mean() > 0.3
    torch.testing.assert_close(ours[:, inside], theirs[:, inside], atol=1e-4, rtol=0)


def test_scale_and_flips_follow_torchvision():
    image = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1))
    zoomed = _warp(_one("scale"), image, {"factors": torch.tensor([[1.5, 1.5]])})
    centre = TF.resize(image, [48, 48], antialias=False)[:, 8:40, 8:40]
    torch.testing.assert_close(zoomed, centre, atol=1e-4, rtol=0)
    assert torch.equal(_warp(_one("hflip"), image, {}), image.flip(-1))
    assert torch.equal(_warp(_one("vflip"), image, {}), image.flip(-2))


def test_elastic_moves_pixels_smoothly_by_at_most_about_its_displacement():
    elastic = _one("elastic", displacement=5.0, spacing=8.0)
    generator = torch.Generator().manual_seed(2)
    coords = centred_pixels(40, 4, torch.device("cpu"))
    params = elastic.draw_batch(generator, torch.full((4, 2), 40.0), 40.0)
    shift = elastic.source_coords(coords, params) - coords
    assert 1.0 < shift.abs().max() <= 5.0 * 1.3  # bicubic may overshoot its control points a bit
    # smooth: neighbours move alike (control points are 8 px apart)
    assert (shift[:, 1:] - shift[:, :-1]).abs().max() < 5.0
    still = _one("elastic", displacement=0.0).source_coords(coords, params)
    assert torch.equal(still, coords)


@pytest.mark.parametrize(
    "name,options",
    [
        ("brightness", {"range": [1.3, 1.3]}),
        ("contrast", {"range": [0.6, 0.6]}),
        ("gamma", {"range": [1.4, 1.4]}),
        ("gamma", {"range": [0.7, 0.7], "invert": True}),
    ],
)
def test_batched_intensity_equals_the_per_sample_form_for_the_same_draw(name, options):
    images = torch.randn(3, 2, 20, 24, generator=torch.Generator().manual_seed(3))
    transform = _one(name, **options)
    batched = transform.apply_batch(images, torch.Generator().manual_seed(0))
    for sample, out in zip(images, batched, strict=True):
        expected = transform.apply(sample, torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_batched_blur_is_torchvisions_blur_with_each_samples_sigma():
    images = torch.randn(4, 2, 24, 24, generator=torch.Generator().manual_seed(4))
    blur = _one("blur", sigma=[0.4, 1.6])
    batched = blur.apply_batch(images, torch.Generator().manual_seed(5))
    sigmas = uniform_batch(torch.Generator().manual_seed(5), 4, 0.4, 1.6)  # the same draw
    for sample, out, sigma in zip(images, batched, sigmas.tolist(), strict=True):
        kernel = 2 * math.ceil(3 * sigma) + 1
        expected = TF.gaussian_blur(sample, [kernel, kernel], [sigma, sigma])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_colour_steps_with_a_factor_per_sample_equal_torchvisions():
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    factors = torch.tensor([0.6, 1.0, 1.4])
    shifts = torch.tensor([-0.2, 0.0, 0.35])
    per_sample = factors.view(-1, 1, 1, 1)
    for ours, theirs, values in [
        (_brightness(images, per_sample), TF.adjust_brightness, factors),
        (_contrast(images, per_sample), TF.adjust_contrast, factors),
        (_saturation(images, per_sample), TF.adjust_saturation, factors),
        (_hue(images, shifts.view(-1, 1, 1, 1)), TF.adjust_hue, shifts),
    ]:
        for index, value in enumerate(values.tolist()):
            torch.testing.assert_close(ours[index], theirs(images[index], value), atol=1e-5, rtol=0)


def test_noise_has_each_samples_drawn_spread():
    images = torch.zeros(2, 1, 64, 64)
    noise = _one("noise", std=[0.05, 0.3])
    out = noise.apply_batch(images, torch.Generator().manual_seed(7))
    drawn = uniform_batch(torch.Generator().manual_seed(7), 2, 0.05, 0.3)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), drawn, rtol=0.08, atol=0)


def _scene(seed: int) -> tuple[dict, dict, dict]:
    """A 1-channel and a 3-channel modality, a disc task and a half-plane task, 72×90 px."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(72.0), torch.arange(90.0), indexing="ij")
    cy, cx = (
        20 + 30 * torch.rand((), generator=generator),
        25 + 40 * torch.rand((), generator=generator),
    )
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 15**2
    images = {
        "mri": (disc.float() + xx / 90 + 0.1 * torch.randn(72, 90, generator=generator))[None],
        "rgb": torch.stack([xx / 90, yy / 72, disc.float()]),
    }
    labels = {"disc": disc.long(), "side": (xx > 45).long() * 2}
    return images, labels, {"disc": True, "side": True}


def _statistics(images: dict, labels: dict) -> dict[str, torch.Tensor]:
    """Per sample: what a change of geometry or intensity would move."""
    return {
        "mri mean": images["mri"].mean(dim=(1, 2, 3)),
        "mri sd": images["mri"].std(dim=(1, 2, 3)),
        "rgb mean": images["rgb"].mean(dim=(1, 2, 3)),
        "rgb sd": images["rgb"].std(dim=(1, 2, 3)),
        "disc": (labels["disc"] == 1).float().mean(dim=(1, 2)),
        "ignore": (labels["disc"] == IGNORE_INDEX).float().mean(dim=(1, 2)),
        "side 2": (labels["side"] == 2).float().mean(dim=(1, 2)),
    }


def _batches(train: dict, count: int, batch: int = 25) -> dict[str, torch.Tensor]:
    transform = TrainTransform.from_train_config(train)
    augment = transform.batch_augment()
    images, labels = [], []
    for start in range(0, count, batch):
        samples = []
        for seed in range(start, start + batch):
            generator = torch.Generator().manual_seed(seed)
            sample = {"has_label": {}, "id": "", "size": 0}
            if augment is None:
                sample["images"], sample["labels"] = transform(*_scene(seed), generator)
            else:
                out = transform.window(*_scene(seed), generator)
                sample["images"], sample["labels"], sample["origin"] = out
            samples.append(sample)
        collated = collate(samples, multiple=1)  # the crops as they are, unpadded
        if augment is None:
            images.append(collated["images"])
            labels.append(collated["labels"])
        else:
            generator = torch.Generator().manual_seed(10_000 + start)
            out = augment(collated["images"], collated["labels"], generator, collated["origin"])
            images.append(out[0])
            labels.append(out[1])
    return _statistics(
        {k: torch.cat([i[k] for i in images]) for k in images[0]},
        {k: torch.cat([label[k] for label in labels]) for k in labels[0]},
    )


@pytest.mark.parametrize(
    "augment",
    [
        "light",
        "medical",
        "natural",
        [
            {"affine": {"degrees": 30.0, "translate": 0.2, "scale": [0.8, 1.2], "shear": 10.0}},
            {"elastic": {"displacement": 6.0, "spacing": 16.0, "p": 1.0}},
            {"gamma": {"range": [0.5, 2.0], "p": 1.0}},
        ],
    ],
    ids=["light", "medical", "natural", "affine-elastic-gamma"],
)
def test_the_batched_path_equals_the_loaders_in_distribution(augment):
    train = {"crop": 48, "augment": augment, "hflip": True, "crop_foreground": 0.5,
             "resize": [56, 80]}  # fmt: skip
    on_loader = _batches(train, 300)
    on_device = _batches({**train, "augment_on": "gpu"}, 300)
    for name, loader_values in on_loader.items():
        device_values = on_device[name]
        # two-sample difference of means within 4 standard errors (plus a little for the
        # documented differences: one resampling, no anti-aliasing, elastic phase)
        error = math.sqrt(loader_values.var() / 300 + device_values.var() / 300)
        gap = abs(loader_values.mean() - device_values.mean())
        assert gap < 4 * error + 0.01, (
            name,
            float(loader_values.mean()),
            float(device_values.mean()),
        )


def test_the_device_path_augments_at_all():
    train = {"crop": 48, "augment": "medical", "hflip": True, "augment_on": "gpu"}
    plain = _batches({"crop": 48, "augment_on": "gpu"}, 50)
    augmented = _batches(train, 50)
    assert not torch.equal(plain["mri mean"], augmented["mri mean"])
    assert float(plain["ignore"].max()) == 0.0  # a centred 48² crop of 72×90 images
    assert float(augmented["ignore"].max()) > 0.0  # rotations and zooms reach outside


def test_a_transform_without_a_batched_form_names_augment_on():
    class Invert(IntensityTransform):
        def apply(self, image, generator):
            return -image

    with pytest.raises(UserError) as raised:
        BatchAugment(32, [], [Invert(p=1.0)], window=32)
    assert raised.value.field == "train.augment_on"
    assert "Invert has no batched form" in str(raised.value)


def test_the_loader_sends_only_the_part_of_the_window_on_the_image():
    transform = TrainTransform.from_train_config(
        {"crop": 48, "augment": "medical", "augment_on": "gpu", "crop_foreground": 0.5}
    )
    side = transform.window_side()
    # rotation by up to 180°, zoom out to 0.7: the crop's diagonal over 0.7 at least
    assert side % 32 == 0 and side >= 48 * math.sqrt(2) / 0.7 > 90  # larger than the 72×90 image
    augment = transform.batch_augment()
    for seed in range(6):
        images, labels, origin = transform.window(
            *_scene(seed), torch.Generator().manual_seed(seed)
        )
        part = images["mri"].shape[-2:]
        assert part[0] <= 72 and part[1] <= 90  # never the fill around the image
        assert 0 <= origin[0] <= side - part[0] and 0 <= origin[1] <= side - part[1]
        # the same output as the whole window, fill and all, would give
        whole_images = {k: _place(v, origin, side, 0.0) for k, v in images.items()}
        whole_labels = {k: _place(v, origin, side, IGNORE_INDEX) for k, v in labels.items()}
        batch = [{k: v[None] for k, v in d.items()} for d in (images, labels)]
        whole = [{k: v[None] for k, v in d.items()} for d in (whole_images, whole_labels)]
        got = augment(*batch, torch.Generator().manual_seed(seed), torch.tensor([origin]))
        expected = augment(*whole, torch.Generator().manual_seed(seed))
        for a, b in zip(got, expected, strict=True):
            for key in a:
                torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=0)


def _place(array: torch.Tensor, origin: tuple[int, int], side: int, fill: float) -> torch.Tensor:
    """``array`` at ``origin`` in a ``side``² canvas of ``fill``."""
    canvas = torch.full((*array.shape[:-2], side, side), fill, dtype=array.dtype)
    height, width = array.shape[-2:]
    canvas[..., origin[0] : origin[0] + height, origin[1] : origin[1] + width] = array
    return canvas


def test_trainer_feeds_the_model_device_augmented_crops(tmp_path, demo_spec, monkeypatch, caplog):
    import yaml

    from mmseg_heads.engine.steps import Stepper
    from mmseg_heads.engine.trainer import train

    config = {
        "data": str(demo_spec),
        "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}, "pretrained": "none"},
        "train": {"epochs": 1, "batch_size": 4, "crop": 48, "workers": 0, "precision": "fp32",
                  "augment": "medical", "augment_on": "gpu", "out": str(tmp_path / "run")},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    seen = []
    micro_batch = Stepper.micro_batch

    def record(self, batch, boundary):
        seen.append(batch)
        return micro_batch(self, batch, boundary)

    monkeypatch.setattr(Stepper, "micro_batch", record)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="mmseg_heads"):
            train(load_config(path), progress=False)
    finally:
        torch.set_num_threads(before)
    assert "on whole batches on the training device (augment_on: gpu)" in caplog.text
    assert seen
    for batch in seen:
        # 48² crops, padded to a multiple of 32 as the loader's collate pads them: 0 and ignore
        for image in batch["images"].values():
            assert image.shape[-2:] == (64, 64)
            assert image.is_contiguous(memory_format=torch.channels_last)
            assert not image[..., 48:, :].any() and not image[..., :, 48:].any()
            assert image[..., :48, :48].abs().sum() > 0
        for label in batch["labels"].values():
            assert label.shape[-2:] == (64, 64) and label.dtype == torch.int64
            assert (label[..., 48:, :] == IGNORE_INDEX).all()
            assert (label[..., :48, :48] != IGNORE_INDEX).any()


@pytest.mark.parametrize("on", ["cpu", "gpu"])
def test_inspect_says_where_augmentation_runs(demo_config, capsys, on):
    from mmseg_heads.cli.main import main

    path = demo_config({"augment": "medical", "augment_on": on, "crop": 64})
    assert main(["inspect", str(path), "--no-counts"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("augmentation:"))
    assert "4 geometric, 6 intensity transforms" in line  # medical: 3 and 6; hflip
    if on == "cpu":
        assert line.endswith("per sample in the loader's workers (augment_on: cpu)")
    else:
        # rotation to 180°, zoom out to 0.7, elastic ±8 around 64²: 192² windows
        assert "(augment_on: gpu); the loader sends what lies on the image of a 192² window" in line
