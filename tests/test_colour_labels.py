"""Colour label images (``label_format: colour``): RGB masks mapped to classes through ``colors``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from mmseg_heads.cli.main import main  # noqa: E402
from mmseg_heads.data import scan_cache, scan_read  # noqa: E402
from mmseg_heads.data.dataset import MultiModalDataset  # noqa: E402
from mmseg_heads.data.readers import read_array, read_colour_array  # noqa: E402
from mmseg_heads.data.scan import scan  # noqa: E402
from mmseg_heads.data.spec import IGNORE_INDEX, data_spec_from_dict, load_data_spec  # noqa: E402
from mmseg_heads.errors import ConfigError, UserError  # noqa: E402

H, W = 6, 8
IDS = ["2007_000032", "2007_000033", "2007_000039"]
#: class index -> colour; the VOC colormap's first three, and VOC's border colour for ignore.
COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), IGNORE_INDEX: (224, 224, 192)}
BORDER = COLOURS[IGNORE_INDEX]


def _indices(seed: int) -> np.ndarray:
    """A label map of classes 0..2 with a border of ignored pixels round the middle class."""
    out = np.random.default_rng(seed).integers(0, 3, (H, W)).astype(np.uint8)
    out[0, :] = IGNORE_INDEX
    return out


def _rgb(indices: np.ndarray) -> np.ndarray:
    out = np.zeros((*indices.shape, 3), np.uint8)
    for index, colour in COLOURS.items():
        out[indices == index] = colour
    return out


def _write_voc(root: Path) -> dict[str, np.ndarray]:
    """JPEGImages/{id}.png photos and SegmentationClassRGB/{id}.png colour masks: the first an RGB
    PNG, the second an opaque RGBA PNG, the third a palette PNG whose palette order is not the
    class order (so its indices are not the classes). Returns the expected index maps."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassRGB").mkdir(parents=True)
    expected = {}
    for i, sample_id in enumerate(IDS):
        photo = np.random.default_rng(100 + i).integers(0, 256, (H, W, 3)).astype(np.uint8)
        Image.fromarray(photo, "RGB").save(root / "JPEGImages" / f"{sample_id}.png")
        indices = _indices(i)
        expected[sample_id] = indices.astype(np.int64)
        path = root / "SegmentationClassRGB" / f"{sample_id}.png"
        if i == 0:
            Image.fromarray(_rgb(indices), "RGB").save(path)
        elif i == 1:
            rgba = np.concatenate([_rgb(indices), np.full((H, W, 1), 255, np.uint8)], axis=2)
            Image.fromarray(rgba, "RGBA").save(path)
        else:
            order = [2, IGNORE_INDEX, 0, 1]  # palette entry k holds the colour of class order[k]
            palette_index = np.zeros_like(indices)
            for k, index in enumerate(order):
                palette_index[indices == index] = k
            image = Image.fromarray(palette_index, "P")
            image.putpalette([v for index in order for v in COLOURS[index]])
            image.save(path)
    return expected


def _spec_dict(**task) -> dict:
    return {
        "modalities": {"rgb": {"files": "JPEGImages/{id}.png", "channels": 3}},
        "tasks": {
            "seg": {
                "labels": "SegmentationClassRGB/{id}.png",
                "label_format": "colour",
                "classes": ["background", "aeroplane", "bicycle"],
                "colors": {
                    "background": [0, 0, 0],
                    "aeroplane": "#800000",
                    "bicycle": [0, 128, 0],
                },
                "ignore_colors": [list(BORDER)],
            }
            | task
        },
        "splits": {"all": {"pattern": "."}},
    }


def _write_spec(root: Path, spec: dict) -> Path:
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def voc(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """``(spec path, expected index map per id)`` of a tiny folder of colour masks."""
    expected = _write_voc(tmp_path)
    return _write_spec(tmp_path, _spec_dict()), expected


# --- the dataset -------------------------------------------------------------------------------


def test_colour_masks_read_as_class_indices_with_ignore_colours(voc):
    spec_path, expected = voc
    dataset = MultiModalDataset(load_data_spec(spec_path), "all")
    assert dataset.ids == IDS
    for i, sample_id in enumerate(IDS):  # RGB, opaque RGBA and palette PNG alike
        labels = dataset[i]["labels"]["seg"].numpy()
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, expected[sample_id])
        assert (labels[0] == IGNORE_INDEX).all()


def test_a_palette_png_gives_its_colours_in_colour_mode(voc):
    spec_path, _ = voc
    path = spec_path.parent / "SegmentationClassRGB" / f"{IDS[2]}.png"
    assert read_array(path).ndim == 2  # its indices, as index mode reads it
    assert read_colour_array(path).shape == (H, W, 3)


def test_a_colour_of_no_class_stops_the_dataset_naming_the_file(voc):
    spec_path, _ = voc
    path = spec_path.parent / "SegmentationClassRGB" / f"{IDS[0]}.png"
    rgb = np.array(Image.open(path))
    rgb[2, :3] = (12, 250, 3)
    Image.fromarray(rgb, "RGB").save(path)
    dataset = MultiModalDataset(load_data_spec(spec_path), "all")
    with pytest.raises(UserError, match=r"1 colour not in tasks\.seg\.colors: \(12, 250, 3\)") as e:
        dataset[0]
    assert e.value.file == str(path)
    assert e.value.field == "tasks.seg.colors"
    assert "ignore_colors" in e.value.message


def test_a_translucent_rgba_label_is_an_error_naming_the_file(voc):
    spec_path, _ = voc
    path = spec_path.parent / "SegmentationClassRGB" / f"{IDS[1]}.png"
    rgba = np.array(Image.open(path))
    rgba[3, 3:5, 3] = 128
    Image.fromarray(rgba, "RGBA").save(path)
    dataset = MultiModalDataset(load_data_spec(spec_path), "all")
    with pytest.raises(UserError, match=r"alpha < 255 \(not fully opaque\) in 2 pixels") as e:
        dataset[1]
    assert e.value.file == str(path)
    (problem,) = scan(load_data_spec(spec_path), cache=False).errors
    assert problem.field == "tasks.seg.labels"
    assert problem.message.startswith(f"{path}: alpha < 255 (not fully opaque) in 2 pixels")
    assert problem.message.endswith("save colour labels as RGB, or RGBA with alpha 255 everywhere")


def test_a_greyscale_label_in_colour_mode_names_the_file_and_the_field(voc):
    spec_path, expected = voc
    path = spec_path.parent / "SegmentationClassRGB" / f"{IDS[0]}.png"
    Image.fromarray(expected[IDS[0]].astype(np.uint8), "L").save(path)
    dataset = MultiModalDataset(load_data_spec(spec_path), "all")
    with pytest.raises(UserError, match="greyscale, not RGB") as e:
        dataset[0]
    assert e.value.file == str(path)
    assert e.value.field == "tasks.seg.label_format"
    (problem,) = scan(load_data_spec(spec_path), cache=False).errors
    assert problem.field == "tasks.seg.label_format"
    assert problem.message.startswith(f"{path} is a greyscale image, not RGB")


# --- index mode is unchanged -------------------------------------------------------------------


def test_index_mode_still_reads_a_palette_png_as_its_indices(tmp_path):
    """The default, ``label_format: index``: a palette PNG's indices are the classes, as before
    colour labels existed, whatever the palette's colours."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    indices = np.array([[0, 1, 2, 2], [2, 1, 0, 255]], np.uint8)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8), "RGB").save(tmp_path / "img/a.png")
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    image.save(tmp_path / "lab/a.png")
    spec = {
        "modalities": {"rgb": {"files": "img/{id}.png", "channels": 3}},
        "tasks": {"seg": {"labels": "lab/{id}.png", "classes": ["a", "b", "c"], "ignore": [255]}},
        "splits": {"all": {"pattern": "."}},
    }
    loaded = load_data_spec(_write_spec(tmp_path, spec))
    assert loaded.tasks["seg"].label_format == "index"
    labels = MultiModalDataset(loaded, "all")[0]["labels"]["seg"].numpy()
    assert labels.tolist() == indices.astype(np.int64).tolist()
    assert scan(loaded, cache=False).errors == []


# --- the scan and inspect ----------------------------------------------------------------------


def test_the_scan_lists_unmapped_colours_with_pixels_and_the_fix(voc):
    spec_path, _ = voc
    root = spec_path.parent
    for sample_id, pixels in ((IDS[0], 4), (IDS[2], 2)):
        path = root / "SegmentationClassRGB" / f"{sample_id}.png"
        rgb = np.array(Image.open(path).convert("RGB"))
        rgb[2, :pixels] = (12, 250, 3)
        rgb[3, 0] = (1, 2, 3)
        Image.fromarray(rgb, "RGB").save(path)
    result = scan(load_data_spec(spec_path), cache=False)
    (problem,) = result.errors
    assert problem.field == "tasks.seg.colors"
    assert problem.message.startswith(
        "2 colours not in tasks.seg.colors: (12, 250, 3) ×6 px, (1, 2, 3) ×2 px; in 2 files, "
        f"e.g. {root / 'SegmentationClassRGB' / IDS[0]}.png"
    )
    assert problem.message.endswith("add them to `colors` (one class each) or to `ignore_colors`")


def test_class_pixels_from_the_scan_count_colours(voc):
    spec_path, expected = voc
    spec = load_data_spec(spec_path)
    result = scan(spec, cache=False)
    assert result.errors == []
    labelled, counter = result.class_pixels(spec, "seg", IDS)
    everything = np.concatenate([expected[i].ravel() for i in IDS])
    assert labelled == 3
    assert dict(counter) == {int(v): int((everything == v).sum()) for v in np.unique(everything)}


def test_the_scan_cache_keeps_index_and_colour_facts_apart(voc, monkeypatch):
    """The same files scanned as index labels, then as colour labels: the cached raw value
    histograms are not taken for colours, and a second colour scan reads no label file again."""
    monkeypatch.setattr(scan_cache, "RACY_NS", 0)  # files written a moment ago may be cached
    reads = []
    monkeypatch.setattr(
        scan_read, "read_colour_array", lambda path: reads.append(path) or read_colour_array(path)
    )
    spec_path, _ = voc
    raw = yaml.safe_load(spec_path.read_text())
    raw["tasks"]["seg"] = {
        "labels": raw["tasks"]["seg"]["labels"],
        "classes": ["a", "b"],
        "values": {"other": 0},
    }
    scan(data_spec_from_dict(raw, spec_path))  # index labels: RGB files are errors, still cached
    assert reads == []
    colour_spec = load_data_spec(spec_path)
    first = scan(colour_spec)
    assert first.errors == []
    assert len(reads) == len(IDS)
    assert first.class_pixels(colour_spec, "seg", IDS)[1][IGNORE_INDEX] == 3 * W
    second = scan(colour_spec)
    assert len(reads) == len(IDS)  # from the cache
    assert second.facts == first.facts


def test_inspect_exits_0_on_colour_masks_and_2_on_a_colour_of_no_class(voc, capsys):
    spec_path, _ = voc
    assert main(["inspect", str(spec_path), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "seg: 3 labelled; pixels: background " in out and f"ignore {3 * W}" in out
    path = spec_path.parent / "SegmentationClassRGB" / f"{IDS[1]}.png"
    rgba = np.array(Image.open(path))
    rgba[4, :5] = (12, 250, 3, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    assert main(["inspect", str(spec_path), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "tasks.seg.colors: 1 colour not in tasks.seg.colors: (12, 250, 3) ×5 px" in err
    assert "Traceback" not in err


# --- the spec ----------------------------------------------------------------------------------


def _spec_error(tmp_path: Path, **task) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        data_spec_from_dict(_spec_dict(**task), tmp_path / "spec.yaml")
    return info.value


def _fields(error: ConfigError) -> dict[str, str]:
    return {p.field: p.message for p in error.problems}


def test_every_class_needs_a_colour(tmp_path):
    error = _spec_error(tmp_path, colors={"background": [0, 0, 0]})
    message = _fields(error)["tasks.seg.colors"]
    assert message.endswith("no colour for: aeroplane, bicycle")
    assert "tasks.seg.colors" in str(error)
    assert "no colour for: background, aeroplane, bicycle" in str(
        _spec_error(tmp_path, colors=None)
    )


def test_colours_must_be_distinct(tmp_path):
    colors = {"background": [0, 0, 0], "aeroplane": "#000000", "bicycle": [0, 128, 0]}
    message = _fields(_spec_error(tmp_path, colors=colors))["tasks.seg.colors"]
    assert "'background' and 'aeroplane' have the same colour (0, 0, 0)" in message


def test_an_ignore_colour_may_not_be_a_class_colour(tmp_path):
    message = _fields(_spec_error(tmp_path, ignore_colors=["#800000"]))["tasks.seg.ignore_colors"]
    assert message.startswith("(128, 0, 0) is the colour of class 'aeroplane'")


def test_raw_value_keys_are_errors_with_colour_labels(tmp_path):
    fields = _fields(_spec_error(tmp_path, values={0: 0}, ignore=[255]))
    assert set(fields) == {"tasks.seg.values", "tasks.seg.ignore"}
    assert "ignore_colors" in fields["tasks.seg.ignore"]


def test_ignore_colors_belong_to_colour_labels(tmp_path):
    fields = _fields(_spec_error(tmp_path, label_format="index"))
    assert set(fields) == {"tasks.seg.ignore_colors"}


def test_a_label_format_typo_suggests_colour(tmp_path):
    error = _spec_error(tmp_path, label_format="color")
    assert "did you mean 'colour'" in _fields(error)["tasks.seg.label_format"]


def test_colour_labels_with_a_volume_section_are_an_error(tmp_path):
    spec = _spec_dict(labels="labels/{id}.npy")
    spec["modalities"]["rgb"]["files"] = "images/{id}.npy"
    spec["volume"] = {"slice_axis": 2}
    with pytest.raises(ConfigError) as info:
        data_spec_from_dict(spec, tmp_path / "spec.yaml")
    assert "tasks.seg.label_format" in _fields(info.value)


def test_an_npy_colour_label_of_other_numbers_is_an_error(tmp_path):
    spec = load_data_spec(_write_spec(tmp_path, _spec_dict()))
    task = spec.tasks["seg"]
    with pytest.raises(UserError, match="whole numbers 0..255") as e:
        task.map_labels(np.full((2, 2, 3), 300, np.int64), "lab/a.npy")
    assert e.value.file == "lab/a.npy"
    ok = np.zeros((2, 2, 3), np.int64)
    ok[0, 0] = (128, 0, 0)
    assert task.map_labels(ok, "lab/a.npy").tolist() == [[1, 0], [0, 0]]
