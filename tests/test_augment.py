"""Augmentation: labels stay in their class set, geometry moves every array alike, intensity never
touches labels, foreground crops find foreground, draws depend on the seed only, bad entries exit 2."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmseg_heads.config import load_config
from mmseg_heads.data.augment import PRESETS, TRANSFORMS, TrainTransform, build_transforms
from mmseg_heads.data.augment.base import GeometricTransform, IntensityTransform
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.engine.loaders import train_dataset, train_loader
from mmseg_heads.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLASSES = {"seg": 4, "edges": 2}


def _sample(h: int = 40, w: int = 36, seed: int = 0) -> tuple[dict, dict]:
    """Two modalities and two label maps; blocks of constant value so warps are easy to follow."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(1, 4, (h // 8 + 1, w // 8 + 1), generator=g)
    seg = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)[:h, :w].clone()
    seg[:4] = 0  # some background
    images = {"rgb": torch.stack([seg.float()] * 3), "depth": seg.float()[None].clone()}
    labels = {"seg": seg.clone(), "edges": (seg == 2).long()}
    return images, labels


def _one(name: str, **options) -> TrainTransform:
    (transform,) = build_transforms([{name: {"p": 1.0, **options}}])
    if isinstance(transform, GeometricTransform):
        return TrainTransform(crop=32, geometric=[transform])
    return TrainTransform(crop=32, intensity=[transform])


def _apply(transform: TrainTransform, images, labels, seed: int = 0, has_label=None, on="cpu"):
    """One sample through the loader's path (``on="cpu"``), or through the loader's window cut and
    then ``augment_on: gpu``'s batched path (as a batch of one, on the CPU device)."""
    has_label = has_label or dict.fromkeys(labels, True)
    generator = torch.Generator().manual_seed(seed)
    if on == "cpu":
        return transform(images, labels, has_label, generator)
    windows = dataclasses.replace(transform, on="gpu")
    images, labels, origin = windows.window(images, labels, has_label, generator)
    images, labels = windows.batch_augment()(
        {k: v[None] for k, v in images.items()},
        {k: v[None] for k, v in labels.items()},
        generator,
        torch.tensor([origin]),
    )
    return {k: v[0] for k, v in images.items()}, {k: v[0] for k, v in labels.items()}


@pytest.mark.parametrize("name", TRANSFORMS.names())
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("on", ["cpu", "gpu"])
def test_every_transform_keeps_labels_in_their_class_set_or_ignore(name, seed, on):
    images, labels = _sample(seed=seed)
    out_images, out_labels = _apply(_one(name), images, labels, seed, on=on)
    for task, label in out_labels.items():
        assert label.dtype == torch.int64 and label.shape == (32, 32)
        allowed = set(range(CLASSES[task])) | {IGNORE_INDEX}
        assert set(label.unique().tolist()) <= allowed, (name, task)
    for image in out_images.values():
        assert image.dtype == torch.float32 and image.shape[-2:] == (32, 32)
        assert torch.isfinite(image).all()


GEOMETRIC = [n for n in TRANSFORMS.names() if issubclass(TRANSFORMS.get(n), GeometricTransform)]
INTENSITY = [n for n in TRANSFORMS.names() if issubclass(TRANSFORMS.get(n), IntensityTransform)]


@pytest.mark.parametrize(
    "name,options",
    [
        ("hflip", {}),
        ("vflip", {}),
        ("rotate", {"degrees": 40.0}),
        ("affine", {"degrees": 20.0, "translate": 0.1, "scale": [0.8, 1.3], "shear": 10.0}),
        ("scale", {"range": [0.6, 1.6], "aspect": [0.8, 1.25]}),
        ("elastic", {"displacement": 6.0, "spacing": 8.0}),
    ],
)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("on", ["cpu", "gpu"])
def test_a_geometric_transform_moves_every_modality_and_label_identically(name, options, seed, on):
    images, labels = _sample(seed=seed)
    out_images, out_labels = _apply(_one(name, **options), images, labels, seed, on=on)
    seg = out_labels["seg"]
    # every channel of every modality took the same warp
    for channel in (*out_images["rgb"], out_images["depth"][0]):
        assert torch.equal(channel, out_images["depth"][0])
    # the two label maps moved together: edges is still (seg == 2) wherever seg is not ignore
    valid = seg != IGNORE_INDEX
    assert torch.equal(out_labels["edges"] == IGNORE_INDEX, ~valid)
    assert torch.equal(out_labels["edges"][valid], (seg[valid] == 2).long())
    # images (bilinear) match the labels (nearest) inside the constant blocks
    image = out_images["depth"][0]
    agree = (image[valid].round().long() == seg[valid]).float().mean()
    assert agree > 0.8, (name, float(agree))
    # the warp did something: for all but flips, pixels differ from the untransformed crop
    plain, _ = _apply(TrainTransform(crop=32), images, labels, seed, on=on)
    if name not in ("hflip", "vflip"):
        assert not torch.equal(plain["depth"], out_images["depth"])


@pytest.mark.parametrize("name", ["rotate", "affine", "elastic"])
@pytest.mark.parametrize("on", ["cpu", "gpu"])
def test_pixels_from_outside_the_image_are_ignore_never_background(name, on):
    options = {"rotate": {"degrees": 45.0}, "affine": {"translate": 0.5}, "elastic": {}}[name]
    images, labels = _sample(20, 20)
    labels = {k: torch.zeros_like(v) for k, v in labels.items()}  # all background
    transform = _one(name, **options)
    transform.crop = 20
    seen_ignore = False
    for seed in range(6):
        out_images, out_labels = _apply(transform, images, labels, seed, on=on)
        outside = out_labels["seg"] == IGNORE_INDEX
        seen_ignore |= bool(outside.any())
        assert set(out_labels["seg"].unique().tolist()) <= {0, IGNORE_INDEX}
        # images are 0 there too, one pixel away from the seam that bilinear blends
        inside = (~outside).float()[None, None]
        deep = torch.nn.functional.max_pool2d(inside, 3, stride=1, padding=1)[0, 0] == 0
        deep[[0, -1], :] = deep[:, [0, -1]] = False  # the seam may lie just outside the crop
        assert (out_images["depth"][0][deep].abs() < 1e-6).all()
    assert seen_ignore


@pytest.mark.parametrize("name", INTENSITY)
@pytest.mark.parametrize("on", ["cpu", "gpu"])
def test_intensity_transforms_never_change_labels_and_respect_modalities(name, on):
    images, labels = _sample()
    images["rgb"] = torch.randn(3, 40, 36, generator=torch.Generator().manual_seed(1))
    plain_images, plain_labels = _apply(TrainTransform(crop=32), images, labels, 5, on=on)
    out_images, out_labels = _apply(_one(name, modalities=["rgb"]), images, labels, 5, on=on)
    for task in labels:
        assert torch.equal(out_labels[task], plain_labels[task])
    assert torch.equal(out_images["depth"], plain_images["depth"])  # not selected: untouched
    assert not torch.equal(out_images["rgb"], plain_images["rgb"])  # selected and p = 1


def test_gamma_and_contrast_keep_the_normalised_scale():
    image = torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(0))
    for name in ("gamma", "contrast"):
        (transform,) = build_transforms([{name: {"p": 1.0}}])
        out = transform({"x": image}, torch.Generator().manual_seed(3))["x"]
        assert out.min() >= image.min() - 1e-4 or name == "gamma"
        assert abs(float(out.mean())) < 0.5 and 0.5 < float(out.std()) < 1.5


def test_crop_foreground_1_always_contains_foreground():
    h, w = 200, 180
    seg = torch.zeros(h, w, dtype=torch.long)
    seg[150:153, 20:23] = 1  # 9 foreground pixels far from the centre
    images = {"x": torch.randn(1, h, w)}
    geometric = build_transforms([{"rotate": {"degrees": 30.0, "p": 0.5}}, "hflip"])
    transform = TrainTransform(crop=32, geometric=geometric, crop_foreground=1.0)
    for seed in range(40):
        _, out = _apply(transform, images, {"seg": seg}, seed)
        assert (out["seg"] == 1).any(), seed
    # without foreground crops, most uniform crops miss it
    uniform = TrainTransform(crop=32, geometric=geometric)
    hits = sum(
        bool((_apply(uniform, images, {"seg": seg}, s)[1]["seg"] == 1).any()) for s in range(40)
    )
    assert hits < 10


def test_crop_foreground_uses_only_tasks_the_sample_is_labelled_for():
    seg = torch.zeros(100, 100, dtype=torch.long)
    seg[80:82, 80:82] = 1
    other = torch.zeros(100, 100, dtype=torch.long)
    other[5:7, 5:7] = 1
    transform = TrainTransform(crop=16, crop_foreground=1.0)
    for seed in range(20):
        _, out = _apply(transform, {"x": torch.zeros(1, 100, 100)}, {"a": seg, "b": other}, seed,
                        has_label={"a": False, "b": True})  # fmt: skip
        assert (out["b"] == 1).any()


def test_resize_to_a_shorter_side_and_a_range():
    images, labels = _sample(40, 80)
    transform = TrainTransform(crop=80, resize=80)  # shorter side 40 -> 80: the image doubles
    out_images, out_labels = _apply(transform, images, labels)
    assert (out_labels["seg"] != IGNORE_INDEX).all()  # 80×160, so an 80² crop needs no padding
    small = TrainTransform(crop=80)
    _, padded = _apply(small, images, labels)
    assert (padded["seg"] == IGNORE_INDEX).any()


def test_presets_expand_to_registered_transforms_with_valid_options():
    for name in PRESETS:
        transforms = build_transforms(name)
        assert len(transforms) == len(PRESETS[name])
        for transform in transforms:
            assert 0.0 <= transform.p <= 1.0


def test_the_same_seed_gives_the_same_sample_and_another_seed_another():
    transform = TrainTransform.from_train_config(
        {"crop": 32, "augment": "medical", "hflip": True, "vflip": True, "crop_foreground": 0.5}
    )
    images, labels = _sample()
    a = _apply(transform, images, labels, 7)
    b = _apply(transform, images, labels, 7)
    c = _apply(transform, images, labels, 8)
    assert all(torch.equal(a[0][k], b[0][k]) for k in images)
    assert not all(torch.equal(a[0][k], c[0][k]) for k in images)


def test_augmentation_stream_is_the_same_for_any_number_of_workers(
    demo_config, tmp_path, demo_spec
):
    train = {"augment": "medical", "crop_foreground": 0.5, "seed": 4}
    config = load_config(demo_config(train))
    dataset = train_dataset(config.spec, config.train)
    batches = {}
    for workers in (0, 2):
        loader = train_loader(dataset, config.train | {"workers": workers}, 4, epoch=3)
        batches[workers] = [b["images"]["optical"] for b in loader]
    assert len(batches[0]) == len(batches[2]) > 1
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a, b)
    # and a later epoch draws other crops
    other = train_loader(dataset, config.train | {"workers": 0}, 4, epoch=4)
    assert not torch.equal(next(iter(other))["images"]["optical"], batches[0][0])


def test_an_augment_modality_must_be_one_of_the_spec(demo_config, tmp_path, demo_spec):
    path = demo_config({"augment": [{"gamma": {"modalities": ["termal"]}}]})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.field == "train.augment[0].gamma.modalities"
    assert "termal" in str(problem) and "thermal" in str(problem)


@pytest.mark.parametrize(
    "augment,field,text",
    [
        ([{"rotat": {"degrees": 5}}], "train.augment[0]", "did you mean 'rotate'"),
        (
            ["hflip", {"gamma": {"range": [2.0, 1.0]}}],
            "train.augment[1].gamma.range",
            "low must not exceed high",
        ),
        ([{"rotate": {"degrees": 500}}], "train.augment[0].rotate.degrees", "above the maximum"),
        ([{"scale": {"rnage": [1, 2]}}], "train.augment[0].scale.rnage", "did you mean 'range'"),
        ("medicl", "train.augment", "did you mean 'medical'"),
        ([{"blur": {}, "noise": {}}], "train.augment[0]", "one `{name: {options}}` mapping"),
    ],
)
def test_bad_augment_entries_exit_2_naming_the_field(
    demo_config, tmp_path, demo_spec, augment, field, text
):
    path = demo_config({"augment": augment})
    result = subprocess.run(
        [sys.executable, "-m", "mmseg_heads", "inspect", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: {field}: " in result.stderr and text in result.stderr, result.stderr


def test_every_transform_has_a_docstring_and_documented_options():
    for name in TRANSFORMS.names():
        cls = TRANSFORMS.get(name)
        assert cls.__doc__, name
        for option, node in cls.schema_fields().items():
            assert node.doc, (name, option)


def test_an_unaugmented_loader_reads_the_files_unchanged(demo_config, tmp_path, demo_spec):
    config = load_config(demo_config({"hflip": False, "crop": 64}))
    dataset = train_dataset(config.spec, config.train)
    plain = type(dataset)(config.spec, "train")
    sample = dataset[(0, 123)]
    assert np.array_equal(
        sample["images"]["optical"].numpy(), plain[0]["images"]["optical"].numpy()
    )


def test_train_warns_when_the_crop_is_larger_than_the_images(demo_config, tmp_path, demo_spec):
    # the demo's 16 training images are 64²: a 96² crop pads every one of them
    path = demo_config({"crop": 96, "epochs": 1, "workers": 0})
    command = [sys.executable, "-m", "mmseg_heads", "train", str(path), "train.epochs=1"]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, "model.encoders={optical: tu-mobilenetv3_small_050, thermal: tu-mobilenetv3_small_050}"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "train.crop: the crop (96²) is larger than 16 of 16 training images" in result.stderr
    assert "smallest 64×64" in result.stderr


def test_crop_warning_counts_images_after_resize():
    from mmseg_heads.data.scan import crop_warning

    sizes = [(64, 64), (200, 300), (100, 90)]
    assert "2 of 3" in crop_warning(sizes, 128, None)
    assert crop_warning(sizes, 128, 128) is None
    assert crop_warning(sizes, 128, [96, 160]) is None  # the range reaches 160
    assert "3 of 3" in crop_warning(sizes, 128, [64, 100])
    assert crop_warning(sizes, 64, None) is None
