"""The example data specs for 2-D folder layouts read the folder trees their opening comments show.

Each test writes a tiny tree of that layout in tmp_path and points the shipped spec at it with
``--data-root`` / ``data_root=``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmseg_heads.cli.main import main
from mmseg_heads.data.dataset import MultiModalDataset
from mmseg_heads.data.spec import IGNORE_INDEX, load_data_spec

SPECS = Path(__file__).resolve().parents[1] / "data_specs"
TRAIN, VAL = ["2007_000032", "2007_000039", "2007_000063"], ["2007_000033"]
H, W = 21, 30


def _rgb(rng) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (H, W, 3)).astype(np.uint8), "RGB")


def _gray(rng) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (H, W)).astype(np.uint8), "L")


def _palette_label(rng, classes: int) -> Image.Image:
    label = rng.integers(0, classes, (H, W)).astype(np.uint8)
    label[0, :] = 255  # a VOC-style border
    image = Image.fromarray(label, "P")
    image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8)))
    return image


def _write_ids(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (folder / "val.txt").write_text("\n".join(VAL) + "\n")


def _folders(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)


@pytest.fixture
def voc_tree(tmp_path) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2007"
    _folders(root, "JPEGImages", "Thermal", "SegmentationClass")
    rng = np.random.default_rng(0)
    for sample_id in TRAIN + VAL:
        _rgb(rng).save(root / "JPEGImages" / f"{sample_id}.jpg")
        _gray(rng).save(root / "Thermal" / f"{sample_id}.png")
        _palette_label(rng, 21).save(root / "SegmentationClass" / f"{sample_id}.png")
    _write_ids(root / "ImageSets" / "Segmentation")
    return root


@pytest.fixture
def rgbd_tree(tmp_path) -> Path:
    root = tmp_path / "rgbd"
    _folders(root, "rgb", "depth", "labels")
    rng = np.random.default_rng(1)
    for sample_id in TRAIN + VAL:
        _rgb(rng).save(root / "rgb" / f"{sample_id}.png")
        depth = rng.integers(500, 9000, (H, W)).astype(np.uint16)  # millimetres, beyond 8 bits
        Image.fromarray(depth).save(root / "depth" / f"{sample_id}.png")
        label = rng.integers(0, 5, (H, W)).astype(np.uint8)
        label[-1, :] = 255
        Image.fromarray(label, "L").save(root / "labels" / f"{sample_id}.png")
    _write_ids(root / "splits")
    return root


@pytest.fixture
def rgbt_tree(tmp_path) -> Path:
    root = tmp_path / "rgbt"
    _folders(root, "rgb", "thermal", "labels")
    rng = np.random.default_rng(2)
    for sample_id in TRAIN + VAL:
        _rgb(rng).save(root / "rgb" / f"{sample_id}.png")
        _gray(rng).save(root / "thermal" / f"{sample_id}.png")
        Image.fromarray(rng.integers(0, 9, (H, W)).astype(np.uint8), "L").save(
            root / "labels" / f"{sample_id}.png"
        )
    _write_ids(root / "splits")
    return root


@pytest.mark.parametrize(
    ("spec", "tree"),
    [
        ("voc_style_two_modalities", "voc_tree"),
        ("rgbd_folders", "rgbd_tree"),
        ("rgbt_folders", "rgbt_tree"),
    ],
)
def test_example_spec_reads_its_folder_tree(spec, tree, request, capsys):
    root = request.getfixturevalue(tree)
    path = SPECS / f"{spec}.yaml"
    head = "\n".join(path.read_text().splitlines()[:12])
    assert f"{root.name}/" in head  # the opening comment shows the tree
    code = main(["inspect", str(path), "--data-root", str(root)])
    out = capsys.readouterr().out
    assert code == 0
    assert "train        3 samples" in out and "val          1 samples" in out
    sample = MultiModalDataset(load_data_spec(path, data_root=root), "train")[0]
    assert sample["size"] == (H, W)
    assert sample["images"]["rgb"].shape == (3, H, W)


def test_voc_style_borders_are_ignored(voc_tree):
    spec = load_data_spec(SPECS / "voc_style_two_modalities.yaml", data_root=voc_tree)
    assert spec.tasks["segmentation"].num_classes == 21
    label = MultiModalDataset(spec, "val")[0]["labels"]["segmentation"]
    assert (label[0] == IGNORE_INDEX).all() and (label[1:] < 21).all()


def test_rgbd_depth_is_read_as_16_bit_and_scaled_to_unit_range(rgbd_tree):
    path = rgbd_tree / "depth" / f"{TRAIN[0]}.png"
    raw = np.asarray(Image.open(path))
    assert raw.max() > 255  # 16 bits survive reading
    spec = load_data_spec(SPECS / "rgbd_folders.yaml", data_root=rgbd_tree)
    depth = MultiModalDataset(spec, "train")[0]["images"]["depth"]
    assert depth.shape == (1, H, W)
    assert float(depth.min()) == 0.0 and float(depth.max()) == pytest.approx(1.0)
