"""`mmseg-heads inspect CONFIG --augment-preview OUT.png`: the grid of augmented training crops."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmseg_heads.cli import inspect as inspect_cli
from mmseg_heads.cli.inspect import augmented_samples, write_augment_preview
from mmseg_heads.cli.main import main
from mmseg_heads.config import load_config
from mmseg_heads.engine.loaders import augment_batch, batch_seed, train_dataset, train_loader
from mmseg_heads.palette import default_palette
from mmseg_heads.report.augment_preview import (
    augment_preview_png,
    caption,
    centre_slice,
    label_rgb,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN = {"crop": 32, "augment": "medical", "crop_foreground": 0.5}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _fake(modalities: int, tasks: int, rows: int) -> tuple[list[dict], SimpleNamespace]:
    """A spec of ``modalities`` one-channel inputs and ``tasks`` two-class tasks, and ``rows``
    16×16 samples whose left quarter is ignore (padding)."""
    names = [f"m{i}" for i in range(modalities)]
    task_names = [f"t{i}" for i in range(tasks)]
    spec = SimpleNamespace(
        modalities={m: SimpleNamespace(channels=1) for m in names},
        tasks={
            t: SimpleNamespace(classes=("background", "thing"), palette=default_palette(2))
            for t in task_names
        },
        context=0,
    )
    label = np.zeros((16, 16), dtype=np.int64)
    label[4:12, 6:14] = 1
    label[:, :4] = 255
    samples = [
        {
            "images": {m: np.random.default_rng(r).normal(size=(1, 16, 16)) for m in names},
            "labels": {t: label for t in task_names},
            "has_label": {t: True for t in task_names},
            "id": f"s{r}",
        }
        for r in range(rows)
    ]
    return samples, spec


def _size(modalities: int, tasks: int, rows: int) -> tuple[int, int]:
    samples, spec = _fake(modalities, tasks, rows)
    return Image.open(io.BytesIO(augment_preview_png(samples, spec, TRAIN, 0))).size


def test_grid_has_a_column_per_modality_and_task_and_a_row_per_sample():
    width_4, height_2 = _size(2, 2, rows=2)
    width_2, _ = _size(1, 1, rows=2)
    _, height_4 = _size(2, 2, rows=4)
    # 2 + 2 columns are about twice as wide as 1 + 1; 4 rows about twice as high as 2
    assert 1.7 < width_4 / width_2 < 2.3
    assert 1.6 < height_4 / height_2 < 2.2
    # a cell is about square: 4 columns × 2 rows is about twice as wide as high
    assert 1.6 < width_4 / height_2 < 2.4


def test_label_map_colours_classes_and_stripes_ignore():
    palette = np.asarray(default_palette(3), dtype=np.float64) / 255
    labels = np.array([[0, 1, 2, 255]] * 64)
    rgba = label_rgb(labels, palette)
    assert np.array_equal(rgba[0, 0], [0, 0, 0, 1])  # background black, opaque
    assert np.allclose(rgba[0, 1, :3], palette[1]) and np.allclose(rgba[0, 2, :3], palette[2])
    ignore = rgba[:, 3, :3]
    assert np.allclose(ignore[:, 0], ignore[:, 1])  # grey...
    assert len(np.unique(ignore[:, 0])) == 2  # ...in two shades: stripes
    assert not np.isin(ignore, palette).all()  # never a class colour


def test_context_shows_the_centre_slice():
    # context 1, 2 channels: slices [-1, 0, +1] stacked as channels 0-1, 2-3, 4-5
    image = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 4, 4), dtype=np.float32)
    centre = centre_slice(image, channels=2, context=1)
    assert centre.shape == (2, 4, 4) and centre[:, 0, 0].tolist() == [2, 3]
    assert centre_slice(image, channels=6, context=0).shape == (6, 4, 4)


def test_caption_names_the_augment_settings():
    text = caption({"crop": 64, "augment": [{"rotate": {"p": 1.0}}, "hflip"], "resize": 96}, 3)
    assert "augment [rotate, hflip]" in text
    assert "crop 64" in text and "crop_foreground 0" in text and "resize 96" in text
    assert "seed 3" in text
    assert "resize native" in caption({"crop": 64, "augment": "light"}, 0)


def test_samples_are_the_first_batch_the_model_receives(demo_config, tmp_path, demo_spec):
    config = load_config(demo_config(TRAIN | {"seed": 4, "workers": 2}))
    samples = augmented_samples(config, 3)
    dataset = train_dataset(config.spec, config.train)
    batch = next(iter(train_loader(dataset, config.train | {"workers": 0}, 3, epoch=1)))
    assert [s["id"] for s in samples] == batch["id"]
    for i, sample in enumerate(samples):
        for modality, image in sample["images"].items():
            assert torch.equal(image, batch["images"][modality][i])
        for task, label in sample["labels"].items():
            assert torch.equal(label, batch["labels"][task][i])


def test_augment_on_gpu_previews_the_batch_the_device_augments(demo_config, tmp_path, demo_spec):
    config = load_config(demo_config(TRAIN | {"augment_on": "gpu", "crop": 48, "batch_size": 3}))
    samples = augmented_samples(config, 3)
    dataset = train_dataset(config.spec, config.train)
    batch = next(iter(train_loader(dataset, config.train | {"workers": 0}, 3, epoch=1)))
    seed = batch_seed(config.train["seed"], 1, 0)
    batch = augment_batch(batch, dataset.transform.batch_augment(), seed)
    assert [s["id"] for s in samples] == batch["id"]
    for i, sample in enumerate(samples):
        for modality, image in sample["images"].items():
            assert image.shape[-2:] == (48, 48)  # the crop, not the padded batch
            assert torch.equal(image, batch["images"][modality][i, :, :48, :48])
        for task, label in sample["labels"].items():
            assert torch.equal(label, batch["labels"][task][i, :48, :48])
    assert "on gpu" in caption(config.train, 0)


def test_same_seed_same_png_other_seed_other_pixels(demo_config, tmp_path, demo_spec):
    config = load_config(demo_config(TRAIN))
    first = write_augment_preview(config, tmp_path / "a.png", samples=2, seed=0)
    again = write_augment_preview(config, tmp_path / "b.png", samples=2, seed=0)
    other = write_augment_preview(config, tmp_path / "c.png", samples=2, seed=1)
    assert first == tmp_path / "a.png"
    assert Image.open(first).format == "PNG"
    assert first.read_bytes() == again.read_bytes()
    a, c = _pixels(first), _pixels(other)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_cli_writes_the_preview_and_prints_its_path(
    demo_config, tmp_path, demo_spec, capsys, monkeypatch
):
    # the memory guidance's trial forward passes are not what this test is about (seconds)
    monkeypatch.setattr(inspect_cli, "memory_guidance", lambda *args: [])
    out = tmp_path / "preview.png"
    code = main(
        ["inspect", str(demo_config(TRAIN)), "--no-counts"]
        + ["--augment-preview", str(out), "--preview-samples", "3", "--preview-seed", "2"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert f"augmentation preview: {out}" in printed
    width, height = Image.open(out).size
    assert 0.8 < width / height * 3 / 4 < 1.25  # 4 columns (2 modalities, 2 tasks), 3 rows


@pytest.mark.parametrize(
    "name",
    ["missing/preview.png", "file.txt/preview.png", "folder", "preview.jpg"],
    ids=["missing-folder", "parent-is-file", "is-a-folder", "not-png"],
)
def test_bad_output_path_exits_2_naming_the_argument(
    demo_config, tmp_path, demo_spec, capsys, name
):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    out = tmp_path / name
    code = main(["inspect", str(demo_config(TRAIN)), "--augment-preview", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "--augment-preview" in lines[0] and str(out) in lines[0]
    assert captured.out == ""  # checked before any work
    assert not (tmp_path / "missing").exists()


def test_a_data_spec_has_no_training_crops_to_preview(tmp_path, demo_spec, capsys):
    code = main(["inspect", str(demo_spec), "--augment-preview", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--augment-preview" in err and "needs a config" in err
    assert not (tmp_path / "p.png").exists()


def test_preview_options_need_the_preview(demo_config, tmp_path, demo_spec, capsys):
    code = main(["inspect", str(demo_config(TRAIN)), "--preview-seed", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "needs --augment-preview" in err
