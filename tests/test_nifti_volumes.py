"""NIfTI volumes read as 2-D slices (mmseg_heads.data with a `volume` section); no shared data.

Small MyoPS-like cases are written with nibabel: int16 image volumes and a label volume with the
raw values 0/200/500/600/1220/2221, in cases of different, non-multiple-of-32 sizes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmseg_heads.data import dataset as dataset_module
from mmseg_heads.data.augment import TrainTransform
from mmseg_heads.data.dataset import MultiModalDataset, collate, keep_labelled
from mmseg_heads.data.normalize import clip_percentiles
from mmseg_heads.data.readers import read_array, read_nifti_geometry, read_shape
from mmseg_heads.data.sampling import train_sampler
from mmseg_heads.data.spec import IGNORE_INDEX, TaskSpec, load_data_spec
from mmseg_heads.errors import ConfigError, UserError

nib = pytest.importorskip("nibabel")

MYOPS_VALUES = (200, 500, 600, 1220, 2221)
#: case -> (X, Y, Z, labelled slices): sizes differ between cases and are not multiples of 32.
CASES = {
    "Case01": (20, 24, 6, (2, 3)),
    "Case02": (37, 45, 5, (0,)),
    "Case11": (50, 29, 4, (3,)),
}
AFFINE = np.diag([0.75, 0.75, 10.0, 1.0])


def _label_volume(shape, labelled, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.int16)
    for index in labelled:
        plane = rng.choice(np.array((0, *MYOPS_VALUES), np.int16), size=shape[:2])
        plane[0, 0] = 2221  # every labelled slice has scar (and so edema and myocardium)
        label[:, :, index] = plane
    return label


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


@pytest.fixture
def volumes(tmp_path) -> Path:
    """``{case}/{case}_C0.nii.gz``, ``_LGE.nii.gz`` (int16) and ``_gd.nii.gz`` (raw MyoPS values)."""
    for seed, (case, (x, y, z, labelled)) in enumerate(CASES.items()):
        rng = np.random.default_rng(seed)
        for modality in ("C0", "LGE"):
            image = rng.integers(0, 3000, (x, y, z)).astype(np.int16)
            _save(image, tmp_path / case / f"{case}_{modality}.nii.gz")
        _save(_label_volume((x, y, z), labelled, seed), tmp_path / case / f"{case}_gd.nii.gz")
    return tmp_path


def _spec(root: Path, volume: dict | bool | None = None, splits: dict | None = None) -> Path:
    """A MyoPS-like spec over ``root``; ``volume=None`` slices across axis 2, ``False`` omits it."""
    spec = {
        "modalities": {
            "C0": {"files": "{id}/{id}_C0.nii.gz", "clip_percentiles": [0.5, 99.5]},
            "LGE": {"files": "{id}/{id}_LGE.nii.gz"},
        },
        "tasks": {
            "anatomy": {
                "labels": "{id}/{id}_gd.nii.gz",
                "classes": ["background", "myocardium", "lv_blood", "rv_blood"],
                "values": {0: 0, 200: 1, 1220: 1, 2221: 1, 500: 2, 600: 3},
            },
            "scar": {
                "labels": "{id}/{id}_gd.nii.gz",
                "classes": ["background", "scar"],
                "values": {2221: 1, "other": 0},
            },
            "edema": {
                "labels": "{id}/{id}_gd.nii.gz",
                "classes": ["background", "edema"],
                "values": {1220: 1, 2221: 1, "other": 0},
            },
        },
        "volume": {"slice_axis": 2} if volume is None else volume,
        "splits": splits or {"train": {"pattern": "^Case0"}, "val": {"pattern": "^Case1"}},
    }
    if volume is False:
        del spec["volume"]
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _raw(root: Path, case: str, kind: str = "gd") -> np.ndarray:
    return np.asanyarray(nib.load(str(root / case / f"{case}_{kind}.nii.gz")).dataobj)


# --- the reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_reader_keeps_dtype_values_and_shape(tmp_path, dtype, ext):
    array = np.arange(4 * 5 * 3).reshape(4, 5, 3).astype(dtype)
    path = tmp_path / f"v{ext}"
    _save(array, path)
    read = read_array(path)
    assert read.dtype == dtype and read.shape == (4, 5, 3)
    np.testing.assert_array_equal(read, array)
    assert read_shape(path) == (4, 5, 3)


def test_nifti_geometry_without_decoding(volumes):
    geometry = read_nifti_geometry(volumes / "Case01" / "Case01_C0.nii.gz")
    assert geometry.shape == (20, 24, 6)
    np.testing.assert_allclose(geometry.affine, AFFINE)
    assert tuple(geometry.header.get_zooms()) == (0.75, 0.75, 10.0)
    with pytest.raises(UserError, match="not a NIfTI file"):
        read_nifti_geometry(volumes / "spec.yaml")


def test_missing_nibabel_names_the_file_and_the_install_command(volumes, monkeypatch):
    monkeypatch.setitem(sys.modules, "nibabel", None)  # `import nibabel` now raises ImportError
    path = volumes / "Case01" / "Case01_C0.nii.gz"
    with pytest.raises(UserError) as info:
        read_array(path)
    assert info.value.file == str(path)
    assert 'pip install "mmseg-heads[nifti]"' in str(info.value)


def test_a_volume_without_a_volume_section_says_how_to_slice_it(volumes):
    spec = load_data_spec(_spec(volumes, volume=False))
    with pytest.raises(UserError, match="volume: {slice_axis: 2}") as info:
        MultiModalDataset(spec, "train")[0]
    assert info.value.field == "volume"


# --- slices, keep rules and splits ---------------------------------------------------------------


def test_every_slice_is_a_sample_with_a_case_slice_id(volumes):
    spec = load_data_spec(_spec(volumes))
    train = MultiModalDataset(spec, "train")
    assert train.cases == ["Case01", "Case02"]
    assert train.ids == [f"Case01#{k}" for k in range(6)] + [f"Case02#{k}" for k in range(5)]
    assert spec.case_of("Case01#4") == ("Case01", 4)
    assert spec.label_file("scar", "Case01#4") == volumes / "Case01" / "Case01_gd.nii.gz"


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        ("labelled", ["Case01#2", "Case01#3", "Case02#0"]),
        ("labelled+1", ["Case01#1", "Case01#2", "Case01#3", "Case01#4", "Case02#0", "Case02#1"]),
        ("labelled+3", [f"Case01#{k}" for k in range(6)] + [f"Case02#{k}" for k in range(4)]),
    ],
)
def test_keep_labelled_slices_and_n_on_each_side(volumes, keep, expected):
    dataset = MultiModalDataset(load_data_spec(_spec(volumes, {"keep": keep})), "train")
    assert dataset.ids == expected
    assert dataset.labelled == [i in ("Case01#2", "Case01#3", "Case02#0") for i in expected]


def test_keep_labelled_counts_foreground_not_ignore(volumes):
    # Slice 0 of Case02 holds 200/500/600/1220/2221; with everything but scar ignored or background,
    # only slices holding 2221 count as labelled.
    path = _spec(volumes, {"keep": "labelled"})
    raw = yaml.safe_load(path.read_text())
    raw["tasks"] = {"scar": raw["tasks"]["scar"]}
    raw["tasks"]["scar"]["ignore"] = [2221]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="labelled slice") as info:
        MultiModalDataset(load_data_spec(path), "train")
    assert info.value.field == "volume.keep"


def test_keep_labelled_helper_clips_at_the_ends():
    flags = np.array([True, False, False, False, True])
    assert keep_labelled(flags, 0) == [0, 4]
    assert keep_labelled(flags, 1) == [0, 1, 3, 4]
    assert keep_labelled(np.zeros(3, bool), 2) == []


def test_splits_take_whole_cases(volumes):
    spec = load_data_spec(_spec(volumes, splits={"a": {"fraction": 0.5}, "b": {"fraction": 0.5}}))
    a, b = MultiModalDataset(spec, "a"), MultiModalDataset(spec, "b")
    cases_a = {spec.case_of(i)[0] for i in a.ids}
    cases_b = {spec.case_of(i)[0] for i in b.ids}
    assert cases_a.isdisjoint(cases_b)
    assert cases_a | cases_b == set(CASES)
    assert len(a) + len(b) == sum(z for _, _, z, _ in CASES.values())


def test_an_id_list_of_slice_ids_is_an_error_that_says_why(volumes):
    (volumes / "train.txt").write_text("Case01#0\nCase01#1\n")
    spec = load_data_spec(_spec(volumes, splits={"train": {"ids": "train.txt"}}))
    with pytest.raises(UserError, match="list case ids") as info:
        spec.split_ids("train")
    assert info.value.field == "splits.train.ids"


def test_slice_axis_0_gives_planes_across_the_first_axis(volumes):
    dataset = MultiModalDataset(load_data_spec(_spec(volumes, {"slice_axis": 0})), "val")
    assert len(dataset) == 50
    sample = dataset[7]
    assert sample["id"] == "Case11#7"
    assert sample["images"]["C0"].shape == (1, 29, 4)
    np.testing.assert_array_equal(
        sample["labels"]["scar"].numpy(), (_raw(volumes, "Case11")[7] == 2221).astype(np.int64)
    )


def test_volumes_of_one_case_must_share_a_grid(volumes):
    _save(np.zeros((20, 24, 5), np.int16), volumes / "Case01" / "Case01_LGE.nii.gz")
    with pytest.raises(UserError, match="differ in grid size") as info:
        MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    assert "Case01_LGE.nii.gz 20×24×5" in str(info.value)


def test_a_2d_file_in_a_volume_spec_is_an_error(volumes):
    _save(np.zeros((20, 24), np.int16), volumes / "Case01" / "Case01_LGE.nii.gz")
    with pytest.raises(UserError, match="is 2-D") as info:
        MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    assert info.value.field == "modalities.LGE.files"


@pytest.mark.parametrize(
    ("volume", "field"),
    [
        ({"keep": "labeled"}, "volume.keep"),
        ({"keep": "all+2"}, "volume.keep"),
        ({"keep": "labelled+x"}, "volume.keep"),
        ({"slice_axis": 3}, "volume.slice_axis"),
        ({"labelled_weight": 0}, "volume.labelled_weight"),
        ({"cache": -1}, "volume.cache"),
        ({"slices": 2}, "volume.slices"),
    ],
)
def test_volume_section_is_validated(volumes, volume, field):
    with pytest.raises(ConfigError) as info:
        load_data_spec(_spec(volumes, volume))
    assert [p.field for p in info.value.problems] == [field]


# --- labels, images, shapes ----------------------------------------------------------------------


def test_many_to_one_maps_with_other_on_int16_values():
    raw = np.array([[0, 200, 500], [600, 1220, 2221]], dtype=np.int16)
    scar = TaskSpec("scar", "x", ("background", "scar"), values={2221: 1, "other": 0})
    edema = TaskSpec("edema", "x", ("background", "edema"), values={1220: 1, 2221: 1, "other": 0})
    anatomy = TaskSpec(
        "anatomy", "x", ("bg", "myo", "lv", "rv"), values={0: 0, 200: 1, 1220: 1, 2221: 1, 500: 2}
    )
    np.testing.assert_array_equal(scar.map_labels(raw, "f"), [[0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(edema.map_labels(raw, "f"), [[0, 0, 0], [0, 1, 1]])
    with pytest.raises(UserError, match=r"\[600\] have no class"):  # no `other`: never silent
        anatomy.map_labels(raw, "f")


def test_mapped_pixel_counts_match_the_raw_values(volumes):
    dataset = MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    counts = {t: np.zeros(n, np.int64) for t, n in (("anatomy", 4), ("scar", 2), ("edema", 2))}
    for sample_id in dataset.ids:
        labels, has_label = dataset.read_labels(sample_id, (0, 0))
        assert all(has_label.values())
        for task, label in labels.items():
            counts[task] += np.bincount(label.ravel(), minlength=len(counts[task]))
    raw = np.concatenate([_raw(volumes, c).ravel() for c in ("Case01", "Case02")])
    n = {v: int((raw == v).sum()) for v in (0, *MYOPS_VALUES)}
    assert counts["anatomy"].tolist() == [n[0], n[200] + n[1220] + n[2221], n[500], n[600]]
    assert counts["scar"].tolist() == [raw.size - n[2221], n[2221]]
    assert counts["edema"].tolist() == [raw.size - n[1220] - n[2221], n[1220] + n[2221]]


def test_samples_are_slices_of_the_right_shapes(volumes):
    dataset = MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    sample = dataset[dataset.ids.index("Case02#0")]
    assert sample["size"] == (37, 45)
    assert sample["images"]["C0"].shape == (1, 37, 45)
    assert sample["images"]["C0"].dtype == torch.float32
    assert set(sample["labels"]) == {"anatomy", "scar", "edema"}
    assert sample["labels"]["anatomy"].shape == (37, 45)
    assert sample["labels"]["anatomy"].dtype == torch.int64
    lge = _raw(volumes, "Case02", "LGE")[:, :, 0].astype(np.float32)
    expected = (lge - lge.mean()) / lge.std()  # LGE: zscore of the slice, no clipping
    np.testing.assert_allclose(sample["images"]["LGE"][0].numpy(), expected, atol=1e-4)


def test_clip_percentiles_clips_each_channel_before_normalising():
    image = np.stack([np.arange(100, dtype=np.float32), np.arange(100, dtype=np.float32) * 2])
    image = image.reshape(2, 10, 10)
    image[0, 9, 9] = 1e6
    clipped = clip_percentiles(image, 1.0, 99.0)
    assert clipped[0].max() == pytest.approx(np.percentile(image[0], 99.0))
    assert clipped[1].min() == pytest.approx(np.percentile(image[1], 1.0))
    assert clipped[1].max() == pytest.approx(196.02)


@pytest.mark.parametrize(
    ("modality", "field"),
    [
        ({"clip_percentiles": [99.5, 0.5]}, "modalities.C0.clip_percentiles"),
        ({"clip_percentiles": [0.5]}, "modalities.C0.clip_percentiles"),
        ({"clip_percentiles": [0.5, 101]}, "modalities.C0.clip_percentiles[1]"),
        ({"normalize": {"mean": [0.0], "scale": 2.0}}, "modalities.C0.normalize"),
    ],
)
def test_clip_and_normalize_are_validated(volumes, modality, field):
    path = _spec(volumes)
    raw = yaml.safe_load(path.read_text())
    raw["modalities"]["C0"] |= modality
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_data_spec(path)
    assert [p.field for p in info.value.problems] == [field]


def test_scale_normalisation_is_accepted(volumes):
    path = _spec(volumes)
    raw = yaml.safe_load(path.read_text())
    raw["modalities"]["C0"]["normalize"] = {"scale": 0.5}
    path.write_text(yaml.safe_dump(raw))
    spec = load_data_spec(path)
    assert spec.modalities["C0"].normalize == {"scale": 0.5}
    image = MultiModalDataset(spec, "val")[0]["images"]["C0"][0].numpy()
    raw_slice = _raw(volumes, "Case11", "C0")[:, :, 0].astype(np.float32)
    low, high = np.percentile(raw_slice, [0.5, 99.5])
    np.testing.assert_allclose(image, np.clip(raw_slice, low, high) * 0.5, rtol=1e-5)


def test_sizes_that_differ_and_are_not_multiples_of_32(volumes):
    """Training crops (padding small slices with ignore); evaluation pads batches to ×32."""
    spec = load_data_spec(_spec(volumes))
    evaluation = MultiModalDataset(spec, "train")
    batch = collate([evaluation[0], evaluation[6], evaluation[7]])  # 20×24, 37×45, 37×45
    assert batch["images"]["C0"].shape == (3, 1, 64, 64)
    assert batch["labels"]["anatomy"].shape == (3, 64, 64)
    assert (batch["labels"]["anatomy"][0, 20:, :] == IGNORE_INDEX).all()
    assert (batch["labels"]["anatomy"][0, :, 24:] == IGNORE_INDEX).all()
    assert (batch["labels"]["anatomy"][1, :37, :45] != IGNORE_INDEX).all()
    assert (batch["images"]["C0"][1, :, 37:, :] == 0).all()
    assert batch["size"] == [(20, 24), (37, 45), (37, 45)]
    torch.manual_seed(0)
    training = MultiModalDataset(spec, "train", transform=TrainTransform(crop=32))
    for index in (0, 6):
        sample = training[index]
        assert sample["images"]["LGE"].shape == (1, 32, 32)
        assert sample["labels"]["scar"].shape == (32, 32)
    small = training[0]["labels"]["anatomy"]  # a 20×24 slice in a 32×32 crop: the rest is ignore
    assert (small == IGNORE_INDEX).sum() == 32 * 32 - 20 * 24


# --- cache and sampling --------------------------------------------------------------------------


def _count_reads(monkeypatch) -> list[Path]:
    reads: list[Path] = []

    def counting(path):
        reads.append(Path(path))
        return read_array(path)

    monkeypatch.setattr(dataset_module, "read_array", counting)
    return reads


def test_each_volume_is_decoded_once_per_case(volumes, monkeypatch):
    reads = _count_reads(monkeypatch)
    dataset = MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    assert reads == []  # keep: all reads headers only
    for index in range(len(dataset)):
        dataset[index]
    assert len(reads) == len(set(reads)) == 2 * 3  # C0, LGE, gd of two cases, each once
    assert dataset._cache.hits > 0


def test_the_cache_is_a_small_lru(volumes, monkeypatch):
    reads = _count_reads(monkeypatch)
    spec = load_data_spec(_spec(volumes, {"cache": 1}, splits={"all": {"pattern": "."}}))
    dataset = MultiModalDataset(spec, "all")
    for sample_id in ("Case01#0", "Case02#0", "Case01#1"):
        dataset.read_images(sample_id)
    assert len(dataset._cache) == 1
    assert [p.name for p in reads].count("Case01_C0.nii.gz") == 2  # evicted by Case02, read again
    uncached = MultiModalDataset(load_data_spec(_spec(volumes, {"cache": 0})), "val")
    reads.clear()
    uncached.read_images("Case11#0")
    uncached.read_images("Case11#1")
    assert len(reads) == 4


def test_a_worker_gets_the_dataset_without_its_cached_volumes(volumes):
    dataset = MultiModalDataset(load_data_spec(_spec(volumes, {"keep": "labelled"})), "train")
    assert len(dataset._cache) == 2  # the label volumes read to find labelled slices
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy._cache) == 0 and copy.ids == dataset.ids
    assert copy[0]["id"] == dataset.ids[0]


def test_labelled_slices_are_drawn_more_often(volumes):
    spec = load_data_spec(_spec(volumes, {"keep": "labelled+1", "labelled_weight": 4.0}))
    dataset = MultiModalDataset(spec, "train")
    assert dataset.sample_weights() == [1.0, 4.0, 4.0, 1.0, 4.0, 1.0]
    sampler = train_sampler(dataset, generator=torch.Generator().manual_seed(0))
    assert sampler is not None and len(sampler) == len(dataset)
    draws = np.bincount(list(sampler) + list(sampler) + list(sampler), minlength=len(dataset))
    assert draws[[1, 2, 4]].sum() > draws[[0, 3, 5]].sum()
    uniform = MultiModalDataset(load_data_spec(_spec(volumes, {"keep": "labelled"})), "train")
    assert uniform.sample_weights() is None and train_sampler(uniform) is None
    assert train_sampler(MultiModalDataset(load_data_spec(_spec(volumes)), "train")) is None


# --- 2.5-D context -------------------------------------------------------------------------------


def test_context_feeds_neighbour_slices_as_channels_with_edges_replicated(volumes):
    spec = load_data_spec(_spec(volumes, {"slice_axis": 2, "context": 1}))
    assert spec.input_channels() == {"C0": 3, "LGE": 3}
    plain = MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    dataset = MultiModalDataset(spec, "train")
    assert dataset.ids == plain.ids
    depth = CASES["Case01"][2]
    for index in (0, 3, depth - 1):
        sample = dataset[dataset.ids.index(f"Case01#{index}")]
        image = sample["images"]["LGE"]
        assert image.shape == (3, 20, 24)
        for channel, neighbour in enumerate((index - 1, index, index + 1)):
            neighbour = min(max(neighbour, 0), depth - 1)
            expected = plain[plain.ids.index(f"Case01#{neighbour}")]["images"]["LGE"][0]
            assert torch.equal(image[channel], expected), (index, channel)
        # labels stay those of the centre slice
        centre = plain[plain.ids.index(f"Case01#{index}")]["labels"]["scar"]
        assert torch.equal(sample["labels"]["scar"], centre)


def test_predict_reads_the_same_context_channels_as_training(volumes):
    from mmseg_heads.engine.predict_inputs import PredictInput
    from mmseg_heads.engine.predict_segment import read_sample

    spec = load_data_spec(_spec(volumes, {"slice_axis": 2, "context": 2}))
    files = {m: spec.modality_file(m, "Case02") for m in spec.modalities}
    sample = read_sample(PredictInput("Case02", files), spec)
    dataset = MultiModalDataset(spec, "train")
    for index in range(CASES["Case02"][2]):
        expected = dataset[dataset.ids.index(f"Case02#{index}")]["images"]["C0"].numpy()
        assert sample.images["C0"][index].shape == (5, 37, 45)
        np.testing.assert_array_equal(sample.images["C0"][index], expected)


def test_context_changes_the_model_inputs_and_inspect_says_so(volumes, tmp_path):
    spec_path = _spec(volumes, {"slice_axis": 2, "context": 1})
    config = {
        "data": str(spec_path),
        "model": {"encoders": {"C0+LGE": "resnet18"}},
        "train": {"crop": 64},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "mmseg_heads", "inspect", str(path), "--size", "64"],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "channels 1 × 3 slices (context 1) = 3 in" in result.stdout
    from mmseg_heads.config import load_config
    from mmseg_heads.engine.run import model_from_config

    model = model_from_config(load_config(path))
    batch = {m: torch.zeros(1, 3, 64, 64) for m in ("C0", "LGE")}
    assert set(model(batch)) == {"anatomy", "scar", "edema"}


def test_context_out_of_range_is_a_spec_error(volumes):
    with pytest.raises(ConfigError) as info:
        load_data_spec(_spec(volumes, {"slice_axis": 2, "context": -1}))
    assert info.value.problems[0].field == "volume.context"


def _tiny_model(spec):
    """A 0.3 M-parameter model over the spec's stacked C0+LGE (untrained: weights from the
    current torch seed)."""
    from mmseg_heads.models.build import build_model

    return build_model(
        {"encoders": {"C0+LGE": "tu-mobilenetv3_small_050"}, "decoder_channels": [8] * 5},
        modalities=spec.input_channels(),
        tasks={t.name: t.num_classes for t in spec.tasks.values()},
    )


# --- one answer per input --------------------------------------------------------------------


@pytest.mark.parametrize("windowed", [False, True])
def test_scores_do_not_depend_on_the_batch_size_and_match_predict(volumes, windowed):
    """Slices of 20×24, 37×45 and 50×29 in one batch: each is segmented as predict segments it
    alone (padded to the model's stride, no more), so batch 1 and batch 4 agree exactly; also
    with 32-pixel windows and a test-time flip."""
    from torch.utils.data import DataLoader

    from mmseg_heads.engine.evaluator import run_evaluation
    from mmseg_heads.engine.inference import WHOLE_IMAGE, Inference

    inference = Inference(32, 0.5, ("hflip",)) if windowed else WHOLE_IMAGE
    from mmseg_heads.engine.predict_segment import segment

    spec = load_data_spec(_spec(volumes, splits={"all": {"pattern": "^Case"}}))
    torch.manual_seed(0)
    model = _tiny_model(spec)
    for module in model.modules():  # BN statistics far from init, so padding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    dataset = MultiModalDataset(spec, "all")
    matrices = {}
    for batch_size in (1, 4):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
        result = run_evaluation(
            model,
            loader,
            spec,
            device=torch.device("cpu"),
            precision="fp32",
            per_sample=True,
            inference=inference,
        )
        matrices[batch_size] = {t: m.matrix.clone() for t, m in result.matrices.items()}
    for task in matrices[1]:
        assert torch.equal(matrices[1][task], matrices[4][task]), task
    # and the masks are predict's: one slice of each size through `segment`
    for sample in (dataset[0], dataset[-1]):
        images = {m: x[None].numpy() for m, x in sample["images"].items()}
        masks = segment(model, images, device=torch.device("cpu"), inference=inference)
        loader = DataLoader([sample], batch_size=1, collate_fn=collate)
        one = run_evaluation(
            model, loader, spec, device=torch.device("cpu"), precision="fp32", inference=inference
        )
        label = sample["labels"]["anatomy"]
        pred = torch.from_numpy(masks["anatomy"][0]).long()
        from mmseg_heads.metrics.confusion import ConfusionMatrix

        expected = ConfusionMatrix(list(spec.tasks["anatomy"].classes), IGNORE_INDEX)
        expected.update(pred[None], label[None])
        assert torch.equal(one.matrices["anatomy"].matrix, expected.matrix)


def test_a_mixed_batch_is_split_into_each_sample_padded_as_predict_pads_it(volumes):
    import torch.nn.functional as F

    from mmseg_heads.engine.evaluator import same_size_parts

    spec = load_data_spec(_spec(volumes, splits={"all": {"pattern": "^Case"}}))
    dataset = MultiModalDataset(spec, "all")
    samples = [dataset[4], dataset[5], dataset[6], dataset[-1]]  # 20×24 ×2, 37×45, 50×29
    batch = collate(samples)
    assert batch["images"]["C0"].shape[-2:] == (64, 64)
    parts = same_size_parts(batch, 32)
    assert sorted(len(p["id"]) for p in parts) == [1, 1, 2]
    for part in parts:
        for row, sample_id in enumerate(part["id"]):
            sample = next(s for s in samples if s["id"] == sample_id)
            h, w = sample["size"]
            alone = F.pad(
                sample["images"]["C0"], (0, -(-w // 32) * 32 - w, 0, -(-h // 32) * 32 - h)
            )
            assert torch.equal(part["images"]["C0"][row], alone)
            assert part["labels"]["scar"].shape[-2:] == alone.shape[-2:]
    # a batch of one size is passed through untouched
    same = collate([dataset[0], dataset[1]])
    assert same_size_parts(same, 32) == [same]


# --- per-case scores ---------------------------------------------------------------------------


def test_plane_spacing_puts_the_slice_axis_first(volumes):
    across_z = MultiModalDataset(load_data_spec(_spec(volumes)), "train")
    assert across_z.plane_spacing("Case01", "scar") == (10.0, 0.75, 0.75)
    across_x = MultiModalDataset(load_data_spec(_spec(volumes, {"slice_axis": 0})), "train")
    assert across_x.plane_spacing("Case01", "scar") == (0.75, 0.75, 10.0)


def test_per_case_scores_by_hand(volumes):
    """Two cases of the `scar` task: one a voxel off by one slice (10 mm), one exact."""
    from mmseg_heads.engine.evaluate import per_case_report
    from mmseg_heads.engine.evaluator import EvalResult

    spec = load_data_spec(_spec(volumes))
    dataset = MultiModalDataset(spec, "train")
    empty = np.zeros((4, 5), np.uint8)
    one = empty.copy()
    one[2, 3] = 1
    ignored = np.full((4, 5), IGNORE_INDEX, np.uint8)
    slices = {
        # Case01: label on slice 1, prediction on slice 0 (slices given out of order)
        "Case01": {1: (empty, one), 0: (one, empty)},
        # Case02: exact, and an ignore-only slice whose prediction must not count
        "Case02": {0: (one, one), 4: (one, ignored)},
    }
    result = EvalResult(matrices={}, case_slices={"scar": slices})
    report = per_case_report(result, dataset, spec)["scar"]
    assert report["unit"] == "mm"
    assert report["cases"]["Case01"]["scar"]["dice"] == 0.0
    assert report["cases"]["Case01"]["scar"]["hd95"] == pytest.approx(10.0)
    assert report["cases"]["Case02"]["scar"] == {"dice": 1.0, "hd95": 0.0}
    summary = report["summary"]["scar"]
    assert summary["dice"]["mean"] == pytest.approx(0.5) and summary["dice"]["n"] == 2
    assert summary["dice"]["sd"] == pytest.approx(np.sqrt(0.5))  # sample sd of 0 and 1
    assert summary["hd95"]["mean"] == pytest.approx(5.0)


def test_evaluation_per_case_equals_scores_of_the_predicted_volumes(volumes):
    """Wiring: each case's slices are stacked in order, cropped to their size and scored with
    the label file's spacing; predict's masks of the same slices give the same scores."""
    from torch.utils.data import DataLoader

    from mmseg_heads.engine.evaluate import per_case_report
    from mmseg_heads.engine.evaluator import run_evaluation
    from mmseg_heads.engine.predict_segment import segment
    from mmseg_heads.metrics.per_case import case_scores

    spec = load_data_spec(_spec(volumes, splits={"all": {"pattern": "^Case"}}))
    torch.manual_seed(0)
    model = _tiny_model(spec)
    dataset = MultiModalDataset(spec, "all")
    loader = DataLoader(dataset, batch_size=3, shuffle=False, collate_fn=collate)
    cpu = torch.device("cpu")
    result = run_evaluation(model, loader, spec, device=cpu, precision="fp32", per_case=True)
    report = per_case_report(result, dataset, spec)
    assert set(report["anatomy"]["cases"]) == set(CASES)
    for case, (_, _, depth, _) in CASES.items():
        samples = [dataset[dataset.ids.index(f"{case}#{i}")] for i in range(depth)]
        images = {m: np.stack([s["images"][m].numpy() for s in samples]) for m in spec.modalities}
        masks = segment(model, images, device=cpu)
        for task in ("anatomy", "scar"):
            target = np.stack([s["labels"][task].numpy() for s in samples])
            expected = case_scores(
                masks[task], target, list(spec.tasks[task].classes), (10.0, 0.75, 0.75)
            )
            assert report[task]["cases"][case] == expected, (case, task)


def test_a_slice_left_out_keeps_its_place_in_the_case_volume():
    """Slices 0 and 2 evaluated, 1 not (keep: labelled): a voxel on 0 vs one on 2 is two slices
    apart, and the gap is neither label nor prediction."""
    from mmseg_heads.engine.evaluate import stack_slices
    from mmseg_heads.metrics.per_case import case_scores

    empty, one = np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8)
    one[1, 1] = 1
    pred, target = stack_slices({2: (empty, one), 0: (one, empty)})
    assert pred.shape == (3, 3, 3) and (target[1] == IGNORE_INDEX).all()
    scores = case_scores(pred, target, ["background", "scar"], (10.0, 0.75, 0.75))
    assert scores["scar"]["hd95"] == pytest.approx(20.0)


def test_nesting_both_scores_the_masks_with_and_without_it(volumes):
    import yaml
    from torch.utils.data import DataLoader

    from mmseg_heads.engine.evaluator import run_evaluation
    from mmseg_heads.engine.inference import Inference

    path = _spec(volumes, splits={"all": {"pattern": "^Case"}})
    raw = yaml.safe_load(path.read_text())
    raw["tasks"]["scar"]["inside"] = {"edema": ["edema"]}
    raw["tasks"]["edema"]["inside"] = {"anatomy": ["myocardium"]}
    path.write_text(yaml.safe_dump(raw))
    spec = load_data_spec(path)
    torch.manual_seed(3)
    model = _tiny_model(spec)
    for name, parameter in model.named_parameters():  # heads that predict every class somewhere
        if "head" in name and name.endswith("bias"):
            parameter.data.zero_()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    loader = DataLoader(MultiModalDataset(spec, "all"), batch_size=4, collate_fn=collate)
    results = {
        nesting: run_evaluation(
            model,
            loader,
            spec,
            device=torch.device("cpu"),
            precision="fp32",
            inference=Inference(nesting=nesting, nesting_rules=spec.nesting()),
        )
        for nesting in ("on", "off", "both")
    }
    both, on, off = results["both"], results["on"], results["off"]
    assert set(both.nested) == {"edema", "scar"} and not on.nested and not off.nested
    changed = 0
    for task in ("anatomy", "edema", "scar"):
        # both: the headline is the model's own masks, the nested scores beside them
        assert torch.equal(both.matrices[task].matrix, off.matrices[task].matrix), task
        if task in both.nested:
            assert torch.equal(both.nested[task].matrix, on.matrices[task].matrix), task
            changed += not torch.equal(on.matrices[task].matrix, off.matrices[task].matrix)
    assert torch.equal(on.matrices["anatomy"].matrix, off.matrices["anatomy"].matrix)
    assert changed  # nesting removed some predicted foreground
    # nesting only ever turns foreground into background: predicted foreground never grows
    for task in ("edema", "scar"):
        assert on.matrices[task].matrix[:, 1].sum() <= off.matrices[task].matrix[:, 1].sum()


def test_an_npy_volume_reaches_predict_as_its_slices_and_comes_back_as_one(tmp_path):
    """One reader for training and predict: a `.npy` volume that trains as 5 slices is
    segmented as 5 slices (not one 3-D 'plane'), and its masks come back as one `.npy` volume."""
    import yaml

    from mmseg_heads.engine.predict_inputs import resolve_inputs
    from mmseg_heads.engine.predict_segment import read_sample
    from mmseg_heads.engine.predict_write import write_masks

    rng = np.random.default_rng(0)
    case = tmp_path / "Case01"
    case.mkdir()
    for name in ("C0", "LGE"):
        np.save(case / f"Case01_{name}.npy", rng.normal(size=(20, 24, 5)).astype(np.float32))
    np.save(case / "Case01_gd.npy", rng.choice([0, 2221], size=(20, 24, 5)).astype(np.int16))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "modalities": {m: {"files": f"{{id}}/{{id}}_{m}.npy"} for m in ("C0", "LGE")},
                "tasks": {
                    "scar": {
                        "labels": "{id}/{id}_gd.npy",
                        "classes": ["background", "scar"],
                        "values": {2221: 1, "other": 0},
                    }
                },
                "volume": {"slice_axis": 2},
                "splits": {"all": {"pattern": "^Case"}},
            }
        )
    )
    spec = load_data_spec(spec_path)
    (item,) = resolve_inputs(spec, [case / "Case01_C0.npy"], [], allow_missing=False)
    sample = read_sample(item, spec)
    assert sample.images["C0"].shape == (5, 1, 20, 24) and sample.slice_axis == 2
    dataset = MultiModalDataset(spec, "all")
    for index in range(5):
        trained = dataset[dataset.ids.index(f"Case01#{index}")]["images"]["LGE"].numpy()
        np.testing.assert_array_equal(sample.images["LGE"][index], trained)
    masks = {"scar": rng.integers(0, 2, size=(5, 20, 24)).astype(np.uint8)}
    (written,) = write_masks(sample, masks, spec, tmp_path / "out")
    assert written == tmp_path / "out" / "scar" / "Case01.npy"
    np.testing.assert_array_equal(np.load(written), np.moveaxis(masks["scar"], 0, 2))

    # An .npy header has no room for a marker: the folder's ledger lists what predict wrote, so
    # predict replaces its own volume again, but not one that someone changed since.
    from mmseg_heads.engine.predict_write import NPY_LEDGER
    from mmseg_heads.errors import UserError

    assert NPY_LEDGER in {p.name for p in written.parent.iterdir()}
    again = {"scar": 1 - masks["scar"]}
    assert write_masks(sample, again, spec, tmp_path / "out") == [written]
    np.testing.assert_array_equal(np.load(written), np.moveaxis(again["scar"], 0, 2))
    np.save(written, np.zeros((20, 24, 5), dtype=np.uint8))  # the user's own file now
    with pytest.raises(UserError, match="would overwrite .*Case01.npy, which predict did not"):
        write_masks(sample, masks, spec, tmp_path / "out")
    np.testing.assert_array_equal(np.load(written), 0)  # left as it was
