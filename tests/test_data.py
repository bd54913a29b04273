"""Data specs, readers, joint transforms, the dataset, collate and normalisation (mmseg_heads.data)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmseg_heads.data.augment import TrainTransform
from mmseg_heads.data.augment.geometric import HorizontalFlip, VerticalFlip
from mmseg_heads.data.dataset import MultiModalDataset, collate
from mmseg_heads.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize
from mmseg_heads.data.readers import read_array
from mmseg_heads.data.spec import IGNORE_INDEX, TaskSpec, data_spec_from_dict, load_data_spec
from mmseg_heads.data.transforms import pad_to
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.palette import default_palette

IDS = ["a0", "a1", "b0", "b1", "c0", "c1", "d0", "d1"]
H, W = 6, 8


def _seg_label(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, (h, w)).astype(np.uint8)


def _write_files(root: Path, ids=IDS, *, h: int = H, w: int = W) -> None:
    """rgb/{id}.png (RGB), depth/{id}.npy (H×W float32), labels/seg/{id}.png (values 0..2)."""
    for folder in ("rgb", "depth", "labels/seg"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, sample_id in enumerate(ids):
        rgb = np.random.default_rng(i).integers(0, 256, (h, w, 3)).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(root / "rgb" / f"{sample_id}.png")
        np.save(root / "depth" / f"{sample_id}.npy", np.full((h, w), float(i), np.float32))
        Image.fromarray(_seg_label(i, h, w), "L").save(root / "labels/seg" / f"{sample_id}.png")


def _spec_dict(**overrides) -> dict:
    spec = {
        "modalities": {
            "rgb": {"files": "rgb/{id}.png", "channels": 3},
            "depth": {"files": "depth/{id}.npy", "channels": 1, "normalize": "none"},
        },
        "tasks": {"seg": {"labels": "labels/seg/{id}.png", "classes": ["bg", "x", "y"]}},
        "splits": {"all": {"pattern": "."}},
    }
    return spec | overrides


def _write_spec(root: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    _write_files(tmp_path)
    return tmp_path


# --- load_data_spec: ids and splits --------------------------------------------------------------


def test_ids_come_from_the_first_modality_pattern(dataset_dir):
    np.save(dataset_dir / "depth" / "zz.npy", np.zeros((H, W), np.float32))  # depth only
    (dataset_dir / "rgb" / "notes.txt").write_text("not an image")
    spec = load_data_spec(_write_spec(dataset_dir, _spec_dict()))
    assert spec.all_ids() == IDS
    depth_first = _spec_dict(
        modalities={
            "depth": {"files": "depth/{id}.npy"},
            "rgb": {"files": "rgb/{id}.png", "channels": 3},
        }
    )
    assert load_data_spec(_write_spec(dataset_dir, depth_first)).all_ids() == sorted([*IDS, "zz"])


def test_spec_defaults_and_paths_relative_to_the_spec(dataset_dir):
    path = _write_spec(dataset_dir, _spec_dict())
    spec = load_data_spec(path)
    assert spec.name == "spec"
    assert spec.root == dataset_dir
    assert spec.modalities["rgb"].normalize == "zscore"
    assert spec.modalities["depth"].channels == 1
    assert spec.tasks["seg"].num_classes == 3
    assert spec.tasks["seg"].optional is False
    assert spec.modality_file("rgb", "a0") == dataset_dir / "rgb" / "a0.png"
    assert spec.label_file("seg", "a0") == dataset_dir / "labels/seg/a0.png"


def test_root_is_relative_to_the_spec_file(tmp_path):
    _write_files(tmp_path / "data")
    (tmp_path / "specs").mkdir()
    path = _write_spec(tmp_path / "specs", _spec_dict(root="../data"))
    assert load_data_spec(path).all_ids() == IDS


def test_split_by_id_file(dataset_dir):
    (dataset_dir / "train.txt").write_text("a0\nb1\n\n  c0  \n")
    spec = load_data_spec(
        _write_spec(dataset_dir, _spec_dict(splits={"train": {"ids": "train.txt"}}))
    )
    assert spec.split_ids("train") == ["a0", "b1", "c0"]


def test_split_id_file_with_unknown_id_is_a_user_error(dataset_dir):
    # One unknown id: the dataset names the file that is missing.
    (dataset_dir / "train.txt").write_text("a0\nnope\n")
    path = _write_spec(dataset_dir, _spec_dict(splits={"train": {"ids": "train.txt"}}))
    with pytest.raises(UserError, match=r"file not found: .*nope") as info:
        MultiModalDataset(load_data_spec(path), "train")
    assert "modalities." in str(info.value)
    # No listed id has files: the list itself is wrong.
    (dataset_dir / "train.txt").write_text("nope\nnada\n")
    with pytest.raises(UserError, match="2 ids have no files") as info:
        load_data_spec(path).split_ids("train")
    assert "splits.train.ids" in str(info.value)


def test_split_by_pattern_searches_the_id(dataset_dir):
    spec = load_data_spec(
        _write_spec(
            dataset_dir, _spec_dict(splits={"ones": {"pattern": "1"}, "ab": {"pattern": "^[ab]"}})
        )
    )
    assert spec.split_ids("ones") == ["a1", "b1", "c1", "d1"]  # search, not match
    assert spec.split_ids("ab") == ["a0", "a1", "b0", "b1"]


def test_unknown_split_name_lists_the_splits(dataset_dir):
    spec = load_data_spec(_write_spec(dataset_dir, _spec_dict()))
    with pytest.raises(UserError, match="the spec has: all"):
        spec.split_ids("val")


def test_fraction_splits_partition_the_ids_deterministically(dataset_dir):
    splits = {"train": {"fraction": 0.75, "seed": 3}, "val": {"fraction": 0.25, "seed": 3}}
    path = _write_spec(dataset_dir, _spec_dict(splits=splits))
    spec = load_data_spec(path)
    train, val = spec.split_ids("train"), spec.split_ids("val")
    assert len(train) == 6 and len(val) == 2
    assert not set(train) & set(val)
    assert sorted(train + val) == IDS
    again = load_data_spec(path)
    assert again.split_ids("train") == train and again.split_ids("val") == val


def test_fraction_split_takes_only_ids_not_claimed_by_other_splits(dataset_dir):
    splits = {"test": {"pattern": "^d"}, "train": {"fraction": 0.5}, "val": {"fraction": 0.5}}
    spec = load_data_spec(_write_spec(dataset_dir, _spec_dict(splits=splits)))
    train, val, test = (spec.split_ids(s) for s in ("train", "val", "test"))
    assert test == ["d0", "d1"]
    assert len(train) == 3 and len(val) == 3
    assert sorted(train + val + test) == IDS


# --- load_data_spec: errors ----------------------------------------------------------------------


def test_unknown_key_suggests_the_right_one(dataset_dir):
    spec = _spec_dict()
    spec["modalites"] = spec.pop("modalities")
    path = _write_spec(dataset_dir, spec)
    with pytest.raises(ConfigError) as info:
        load_data_spec(path)
    message = str(info.value)
    assert f"{path}: modalites: unknown key; did you mean 'modalities'?" in message
    assert any(p.field == "modalities" for p in info.value.problems)  # and it is missing


def test_wrong_type_names_file_and_dotted_field(dataset_dir):
    spec = _spec_dict()
    spec["modalities"]["rgb"]["channels"] = "three"
    path = _write_spec(dataset_dir, spec)
    with pytest.raises(ConfigError) as info:
        load_data_spec(path)
    assert str(info.value) == f"{path}: modalities.rgb.channels: expected int, got a string 'three'"


def test_all_spec_problems_are_reported_together(dataset_dir):
    spec = _spec_dict()
    spec["modalities"]["rgb"]["channels"] = 0
    spec["tasks"]["seg"]["classes"] = ["only"]
    spec["splits"]["all"]["fractoin"] = 0.5
    with pytest.raises(ConfigError) as info:
        load_data_spec(_write_spec(dataset_dir, spec))
    fields = {p.field for p in info.value.problems}
    assert fields == {"modalities.rgb.channels", "tasks.seg.classes", "splits.all.fractoin"}
    assert str(info.value).startswith("3 problems:")


def test_missing_modality_file_names_the_modality_field(dataset_dir):
    (dataset_dir / "depth" / "b0.npy").unlink()
    path = _write_spec(dataset_dir, _spec_dict())
    with pytest.raises(UserError) as info:
        MultiModalDataset(load_data_spec(path), "all")
    error = info.value
    assert error.file == str(path)
    assert error.field == "modalities.depth.files"
    assert "b0" in error.message
    assert str(error).startswith(f"{path}: modalities.depth.files: file not found")


def test_missing_required_label_file_names_the_task_field(dataset_dir):
    (dataset_dir / "labels/seg/c1.png").unlink()
    path = _write_spec(dataset_dir, _spec_dict())
    with pytest.raises(UserError) as info:
        MultiModalDataset(load_data_spec(path), "all")
    assert info.value.field == "tasks.seg.labels"
    assert info.value.file == str(path)
    assert "c1" in str(info.value) and "optional: true" in str(info.value)


def test_unmapped_raw_label_value_names_label_file_and_value(dataset_dir):
    label = _seg_label(0)
    label[0, 0] = 7
    label_file = dataset_dir / "labels/seg/a0.png"
    Image.fromarray(label, "L").save(label_file)
    dataset = MultiModalDataset(load_data_spec(_write_spec(dataset_dir, _spec_dict())), "all")
    with pytest.raises(UserError) as info:
        dataset[0]
    assert info.value.file == str(label_file)
    assert "[7]" in str(info.value)
    assert str(info.value).startswith(str(label_file))


def test_value_map_to_a_class_index_out_of_range_is_rejected(dataset_dir):
    spec = _spec_dict()
    spec["tasks"]["seg"]["values"] = {0: 0, 128: 3}
    path = _write_spec(dataset_dir, spec)
    with pytest.raises(ConfigError) as info:
        load_data_spec(path)
    assert info.value.field == "tasks.seg.values.128"
    assert str(info.value).startswith(f"{path}: tasks.seg.values.128: 128 -> 3")


def test_threshold_needs_two_classes(dataset_dir):
    spec = _spec_dict()
    spec["tasks"]["seg"]["threshold"] = 127.5
    path = _write_spec(dataset_dir, spec)
    with pytest.raises(ConfigError, match="exactly 2 classes") as info:
        load_data_spec(path)
    assert info.value.field == "tasks.seg.classes"
    assert info.value.file == str(path)


def test_colors_set_the_listed_classes_and_keep_the_default_for_the_others(dataset_dir):
    spec = _spec_dict()
    spec["tasks"]["seg"]["colors"] = {"y": "#FFa500", "bg": [10, 20, 30]}  # hex of either case
    loaded = load_data_spec(_write_spec(dataset_dir, spec))
    default = default_palette(3)
    assert loaded.tasks["seg"].palette == [(10, 20, 30), default[1], (255, 165, 0)]
    assert loaded.tasks["seg"].colors == {"y": "#FFa500", "bg": [10, 20, 30]}


def test_without_colors_the_palette_is_the_default(dataset_dir):
    loaded = load_data_spec(_write_spec(dataset_dir, _spec_dict()))
    assert loaded.tasks["seg"].colors is None
    assert (
        loaded.tasks["seg"].palette
        == default_palette(3)
        == [(0, 0, 0), (230, 25, 75), (60, 180, 75)]
    )


def test_colors_survive_the_copy_a_checkpoint_keeps(dataset_dir):
    """A checkpoint stores ``spec.raw``; predict rebuilds the spec from it."""
    spec = _spec_dict()
    spec["tasks"]["seg"]["colors"] = {"x": "#00ff00"}
    path = _write_spec(dataset_dir, spec)
    rebuilt = data_spec_from_dict(copy.deepcopy(load_data_spec(path).raw), path)
    assert rebuilt.tasks["seg"].palette[1] == (0, 255, 0)


def test_spec_without_a_colors_key_still_loads_from_an_old_checkpoint(dataset_dir):
    """Checkpoints written before `colors` existed hold task entries without the key."""
    path = _write_spec(dataset_dir, _spec_dict())
    raw = copy.deepcopy(load_data_spec(path).raw)
    del raw["tasks"]["seg"]["colors"]
    assert data_spec_from_dict(raw, path).tasks["seg"].palette == default_palette(3)


def test_missing_spec_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_data_spec(tmp_path / "nope.yaml")


# --- TaskSpec.map_labels and readers ------------------------------------------------------------


def _task(**kw) -> TaskSpec:
    return TaskSpec(name="t", labels="{id}.png", **({"classes": ("bg", "x", "y")} | kw))


def test_map_labels_identity_by_default():
    raw = np.array([[0, 1], [2, 1]], np.uint8)
    out = _task().map_labels(raw, "f.png")
    assert out.dtype == np.int64
    assert out.tolist() == [[0, 1], [2, 1]]


def test_map_labels_with_values_and_other():
    raw = np.array([[0, 128, 5], [200, 0, 128]], np.uint8)
    out = _task(values={0: 0, 128: 1, "other": 2}).map_labels(raw, "f.png")
    assert out.tolist() == [[0, 1, 2], [2, 0, 1]]


def test_map_labels_value_mapped_to_ignore_becomes_255():
    raw = np.array([0, 1, 99], np.uint8)
    out = _task(values={0: 0, 1: 1, 99: "ignore"}).map_labels(raw, "f.png")
    assert out.tolist() == [0, 1, IGNORE_INDEX]


def test_map_labels_ignore_raw_values_become_255():
    raw = np.array([0, 1, 9, 2], np.uint8)
    assert _task(ignore=(9,)).map_labels(raw, "f.png").tolist() == [0, 1, IGNORE_INDEX, 2]


def test_map_labels_threshold_turns_0_255_into_0_1():
    raw = np.array([[0, 255], [255, 0]], np.uint8)
    out = _task(classes=("bg", "fg"), threshold=127.5).map_labels(raw, "f.png")
    assert out.tolist() == [[0, 1], [1, 0]]


def test_map_labels_threshold_with_ignore():
    raw = np.array([0, 255, 100], np.uint8)
    out = _task(classes=("bg", "fg"), threshold=127.5, ignore=(100,)).map_labels(raw, "f.png")
    assert out.tolist() == [0, 1, IGNORE_INDEX]


def test_map_labels_identity_rejects_value_beyond_classes():
    with pytest.raises(UserError, match=r"\[3, 255\]") as info:
        _task().map_labels(np.array([0, 3, 255], np.uint8), "lab/f.png")
    assert info.value.file == "lab/f.png"


def test_map_labels_rejects_rgb_label_images():
    with pytest.raises(UserError, match="colour channels"):
        _task().map_labels(np.zeros((2, 2, 3), np.uint8), "f.png")


def test_palette_png_reads_as_indices_not_rgb(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 230, 80, 60, 60, 190, 80])
    image.save(tmp_path / "p.png")
    raw = read_array(tmp_path / "p.png")
    assert raw.shape == (2, 3)
    assert raw.tolist() == indices.tolist()
    assert _task().map_labels(raw, "p.png").tolist() == indices.tolist()


def test_read_array_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no reader for '.xyz'"):
        read_array(tmp_path / "a.xyz")
    with pytest.raises(UserError, match="file not found"):
        read_array(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot decode") as info:
        read_array(tmp_path / "broken.png")
    assert info.value.file == str(tmp_path / "broken.png")


# --- TrainTransform: crop, flips, padding ------------------------------------------------------


def _coordinate_arrays(h: int, w: int) -> tuple[dict, dict]:
    coords = (np.arange(h)[:, None] * w + np.arange(w)[None, :]).astype(np.float32) + 1.0
    images = {
        "rgb": torch.from_numpy(np.stack([coords] * 3)),
        "depth": torch.from_numpy(coords[None].copy()),
    }
    labels = {
        "seg": torch.from_numpy(coords.astype(np.int64)),
        "edges": torch.from_numpy(coords.astype(np.int64)),
    }
    return images, labels


def _crop_and_flips(crop: int, hflip: bool = True, vflip: bool = True) -> TrainTransform:
    flips = [HorizontalFlip(p=0.5)] * hflip + [VerticalFlip(p=0.5)] * vflip
    return TrainTransform(crop=crop, geometric=flips)


def _run(transform, images, labels, seed):
    has_label = dict.fromkeys(labels, True)
    return transform(images, labels, has_label, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(8))
def test_crop_and_flips_land_the_same_window_everywhere(seed):
    images, labels = _coordinate_arrays(12, 10)
    out_images, out_labels = _run(_crop_and_flips(6), images, labels, seed)
    reference = out_labels["seg"].numpy()
    assert reference.shape == (6, 6)
    for array in (*out_images["rgb"], out_images["depth"][0], out_labels["edges"]):
        np.testing.assert_array_equal(array.numpy(), reference)
    assert out_labels["seg"].dtype == torch.int64
    assert out_images["rgb"].dtype == torch.float32
    # still a window of the original: neighbours differ by 1 along x and by W along y
    assert set(np.abs(np.diff(reference, axis=1)).ravel().tolist()) == {1}
    assert set(np.abs(np.diff(reference, axis=0)).ravel().tolist()) == {10}


def test_flips_happen_sometimes_and_not_always():
    images, labels = _coordinate_arrays(4, 4)
    flipped_x = flipped_y = 0
    for seed in range(40):
        _, out = _run(_crop_and_flips(4), images, labels, seed)
        flipped_x += int(out["seg"][0, 0] > out["seg"][0, 1])
        flipped_y += int(out["seg"][0, 0] > out["seg"][1, 0])
    assert 0 < flipped_x < 40 and 0 < flipped_y < 40


def test_a_crop_of_the_whole_image_without_flips_is_identity():
    images, labels = _coordinate_arrays(5, 7)
    out_images, out_labels = _run(_crop_and_flips(7, False, False), images, labels, 0)
    assert out_images["rgb"].shape == (3, 7, 7)
    np.testing.assert_array_equal(out_images["rgb"][:, :5].numpy(), images["rgb"].numpy())
    np.testing.assert_array_equal(out_labels["seg"][:5].numpy(), labels["seg"].numpy())


def test_crop_pads_images_with_0_and_labels_with_255():
    images, labels = _coordinate_arrays(4, 3)
    out_images, out_labels = _run(_crop_and_flips(6, False, False), images, labels, 0)
    assert out_images["rgb"].shape == (3, 6, 6) and out_labels["seg"].shape == (6, 6)
    np.testing.assert_array_equal(out_images["rgb"][:, :4, :3].numpy(), images["rgb"].numpy())
    np.testing.assert_array_equal(out_labels["seg"][:4, :3].numpy(), labels["seg"].numpy())
    assert (out_images["rgb"][:, 4:] == 0).all() and (out_images["rgb"][:, :, 3:] == 0).all()
    assert (out_labels["seg"][4:] == IGNORE_INDEX).all()
    assert (out_labels["seg"][:, 3:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("seed", range(4))
def test_padding_stays_aligned_under_flips(seed):
    images, labels = _coordinate_arrays(4, 3)
    out_images, out_labels = _run(_crop_and_flips(6), images, labels, seed)
    np.testing.assert_array_equal(
        (out_images["depth"][0] == 0).numpy(), (out_labels["seg"] == IGNORE_INDEX).numpy()
    )
    assert (out_labels["seg"] == IGNORE_INDEX).sum() == 36 - 12


def test_pad_to_leaves_large_arrays_alone():
    images, labels = _coordinate_arrays(4, 4)
    out_images, out_labels = pad_to(images, labels, 2, 2)
    assert out_images["rgb"] is images["rgb"] and out_labels["seg"] is labels["seg"]


# --- MultiModalDataset and collate ------------------------------------------------------------


def test_dataset_sample_has_the_documented_layout(dataset_dir):
    dataset = MultiModalDataset(load_data_spec(_write_spec(dataset_dir, _spec_dict())), "all")
    assert len(dataset) == len(IDS)
    sample = dataset[2]
    assert sample["id"] == "b0"
    assert sample["size"] == (H, W)
    assert set(sample["images"]) == {"rgb", "depth"}
    assert sample["images"]["rgb"].shape == (3, H, W)
    assert sample["images"]["depth"].shape == (1, H, W)
    assert all(v.dtype == torch.float32 for v in sample["images"].values())
    assert sample["labels"]["seg"].dtype == torch.int64
    assert sample["labels"]["seg"].tolist() == _seg_label(2).tolist()
    assert sample["has_label"] == {"seg": True}
    # depth is "none": raw values (file index 2); rgb is zscored per channel
    assert (sample["images"]["depth"] == 2.0).all()
    torch.testing.assert_close(
        sample["images"]["rgb"].mean((1, 2)), torch.zeros(3), atol=1e-5, rtol=0
    )


def test_dataset_takes_any_callable_as_its_transform(dataset_dir):
    """A transform need not be a TrainTransform: any callable with its signature is applied, with a
    generator seeded from the index's seed (the benchmark's centre crop is one)."""
    seen = []

    def corner(images, labels, has_label, generator):
        seen.append(int(torch.randint(0, 2**31, (), generator=generator)))
        return {k: v[:, :2, :3] for k, v in images.items()}, {
            k: v[:2, :3] for k, v in labels.items()
        }

    dataset = MultiModalDataset(
        load_data_spec(_write_spec(dataset_dir, _spec_dict())), "all", transform=corner
    )
    sample = dataset[(2, 7)]
    assert sample["images"]["rgb"].shape == (3, 2, 3) and "origin" not in sample
    assert sample["labels"]["seg"].tolist() == _seg_label(2)[:2, :3].tolist()
    dataset[(2, 7)]
    assert seen[0] == seen[1]  # the same seed, the same draws


def test_dataset_optional_task_without_label_file(dataset_dir):
    (dataset_dir / "labels/edges").mkdir()
    Image.fromarray(np.full((H, W), 255, np.uint8), "L").save(dataset_dir / "labels/edges/a0.png")
    spec = _spec_dict()
    spec["tasks"]["edges"] = {
        "labels": "labels/edges/{id}.png",
        "classes": ["no", "edge"],
        "threshold": 127.5,
        "optional": True,
    }
    dataset = MultiModalDataset(load_data_spec(_write_spec(dataset_dir, spec)), "all")
    with_label, without = dataset[0], dataset[1]
    assert with_label["has_label"] == {"seg": True, "edges": True}
    assert (with_label["labels"]["edges"] == 1).all()
    assert without["has_label"] == {"seg": True, "edges": False}
    assert without["labels"]["edges"].shape == (H, W)
    assert without["labels"]["edges"].dtype == torch.int64
    assert (without["labels"]["edges"] == IGNORE_INDEX).all()


def test_dataset_rejects_modalities_of_different_sizes(dataset_dir):
    np.save(dataset_dir / "depth" / "a1.npy", np.zeros((4, W), np.float32))
    path = _write_spec(dataset_dir, _spec_dict())
    dataset = MultiModalDataset(load_data_spec(path), "all")
    with pytest.raises(UserError) as info:
        dataset[1]
    message = str(info.value)
    assert info.value.file == str(path)
    assert "'a1'" in message
    assert f"modality rgb {H}×{W}" in message and f"modality depth 4×{W}" in message


def test_dataset_rejects_wrong_channel_count(dataset_dir):
    spec = _spec_dict()
    spec["modalities"]["rgb"]["channels"] = 1
    dataset = MultiModalDataset(load_data_spec(_write_spec(dataset_dir, spec)), "all")
    with pytest.raises(UserError, match="has 3 channels but the data spec says 1") as info:
        dataset[0]
    assert info.value.field == "modalities.rgb.channels"


def test_dataset_applies_one_transform_to_images_and_labels(dataset_dir):
    spec = _spec_dict()
    spec["modalities"]["depth"]["normalize"] = "none"
    dataset = MultiModalDataset(
        load_data_spec(_write_spec(dataset_dir, spec)),
        "all",
        transform=_crop_and_flips(4),
    )
    torch.manual_seed(0)
    sample = dataset[0]
    assert sample["images"]["rgb"].shape == (3, 4, 4)
    assert sample["labels"]["seg"].shape == (4, 4)
    assert sample["size"] == (H, W)  # the size of the files, before the transform


def test_demo_dataset_reads_palette_and_threshold_labels(demo_spec):
    dataset = MultiModalDataset(load_data_spec(demo_spec), "val")
    assert len(dataset) == 8
    sample = dataset[0]
    assert sample["images"]["optical"].shape == (3, 64, 64)
    assert set(sample["labels"]["shapes"].unique().tolist()) <= {0, 1, 2, 3}
    assert set(sample["labels"]["hotspots"].unique().tolist()) == {0, 1}


def _fake_sample(h: int, w: int, sample_id: str, labelled: bool = True) -> dict:
    return {
        "images": {"rgb": torch.ones(3, h, w), "depth": torch.ones(1, h, w)},
        "labels": {"seg": torch.zeros(h, w, dtype=torch.int64)},
        "has_label": {"seg": labelled},
        "id": sample_id,
        "size": (h, w),
    }


def test_collate_pads_to_a_multiple_of_32_with_ignore_labels():
    batch = collate([_fake_sample(20, 30, "p"), _fake_sample(40, 10, "q", labelled=False)])
    assert batch["images"]["rgb"].shape == (2, 3, 64, 32)
    assert batch["images"]["depth"].shape == (2, 1, 64, 32)
    assert batch["labels"]["seg"].shape == (2, 64, 32)
    assert batch["labels"]["seg"].dtype == torch.int64
    first_labels, second_labels = batch["labels"]["seg"]
    assert (first_labels[:20, :30] == 0).all()
    assert (first_labels[20:] == IGNORE_INDEX).all() and (
        first_labels[:, 30:] == IGNORE_INDEX
    ).all()
    assert (second_labels[:40, :10] == 0).all() and (second_labels[:, 10:] == IGNORE_INDEX).all()
    assert batch["images"]["rgb"][0, :, :20, :30].eq(1).all()
    assert batch["images"]["rgb"][0, :, 20:].eq(0).all()
    assert batch["has_label"]["seg"].tolist() == [True, False]
    assert batch["id"] == ["p", "q"]
    assert batch["size"] == [(20, 30), (40, 10)]


def test_collate_keeps_sizes_that_are_already_multiples():
    batch = collate([_fake_sample(32, 64, "p"), _fake_sample(32, 64, "q")])
    assert batch["images"]["rgb"].shape == (2, 3, 32, 64)
    assert (batch["labels"]["seg"] == 0).all()


# --- normalize ---------------------------------------------------------------------------------


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((3, 5, 7)) * np.array([10.0, 200.0, 1.0])[:, None, None] + 4).astype(
        np.float32
    )


def test_zscore_gives_zero_mean_unit_std_per_channel():
    out = normalize(_image(), "zscore")
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, rtol=1e-4)
    assert out.dtype == np.float32


def test_zscore_of_a_constant_channel_is_zero_not_nan():
    out = normalize(np.full((1, 3, 3), 7.0, np.float32), "zscore")
    assert np.isfinite(out).all() and (out == 0).all()


def test_minmax_maps_each_channel_onto_0_1():
    out = normalize(_image(), "minmax")
    np.testing.assert_allclose(out.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=(1, 2)), 1.0, rtol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_scale_multiplies():
    image = _image()
    np.testing.assert_allclose(normalize(image, {"scale": 0.5}), image * 0.5)


def test_mean_std_uses_raw_units_per_channel():
    image = _image()
    out = normalize(image, {"mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 8.0]})
    np.testing.assert_allclose(out[1], (image[1] - 2.0) / 4.0, rtol=1e-6)
    np.testing.assert_allclose(out[2], (image[2] - 3.0) / 8.0, rtol=1e-6)


def test_imagenet_scales_to_unit_then_standardises():
    image = np.full((3, 1, 1), 255.0, np.float32)
    out = normalize(image, "imagenet")
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    np.testing.assert_allclose(out.ravel(), expected, rtol=1e-6)


def test_none_returns_the_image_unchanged():
    image = _image()
    np.testing.assert_array_equal(normalize(image, "none"), image)


def test_unknown_normalisation_is_an_error():
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(_image(), "bogus")
