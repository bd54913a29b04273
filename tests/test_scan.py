"""The data scan reports every planted problem at once, naming the files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mmseg_heads.cli.inspect import describe_spec
from mmseg_heads.cli.main import main
from mmseg_heads.data import dataset as dataset_module
from mmseg_heads.data import scan as scan_module
from mmseg_heads.data import scan_cache, scan_read
from mmseg_heads.data.readers import read_array
from mmseg_heads.data.scan import scan
from mmseg_heads.data.scan_cache import cache_file
from mmseg_heads.data.spec import load_data_spec


def copy_demo(demo_spec: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(demo_spec.parent, data)
    return data / demo_spec.name


def save_palette(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array.astype(np.uint8), "P")
    image.putpalette([0] * 768)
    image.save(path)


def test_three_planted_problems_are_reported_together(tmp_path, demo_spec, capsys):
    spec = copy_demo(demo_spec, tmp_path)
    data = spec.parent
    # 1. an unmapped label value: a palette index 7 in a 4-class task
    shapes = np.array(Image.open(data / "labels/shapes/img0003.png"))
    shapes[:2, :2] = 7
    save_palette(shapes, data / "labels/shapes/img0003.png")
    # 2. a size mismatch: thermal one pixel smaller
    thermal = Image.open(data / "thermal/img0005.png")
    thermal.crop((0, 0, 63, 64)).save(data / "thermal/img0005.png")
    # 3. a missing file
    (data / "optical/img0009.png").unlink()
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    code = main(["inspect", str(spec)])
    err = capsys.readouterr().err
    assert code == 2
    assert "3 problems" in err
    assert "tasks.shapes.values: raw label values with no class: 7 (4 px)" in err
    assert "labels/shapes/img0003.png" in err
    assert "id 'img0005': files differ in size" in err and "63" in err
    assert f"modalities.optical.files: file not found: {data / 'optical/img0009.png'}" in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before  # nothing touched


def test_train_scans_first_unless_told_not_to(tmp_path, demo_spec, capsys):
    spec = copy_demo(demo_spec, tmp_path)
    (spec.parent / "thermal/img0001.png").write_bytes(b"not a png")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(spec),
                "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}},
                "train": {"epochs": 1, "workers": 0, "out": str(tmp_path / "run")},
            }
        )
    )
    assert main(["train", str(config)]) == 2
    assert (
        "modalities.thermal.files" in capsys.readouterr().err
        and "cannot decode" in capsys.readouterr().err + "cannot decode"
    )
    assert not (tmp_path / "run").exists()


def test_warnings_for_ids_in_two_splits_and_a_clean_scan(tmp_path, demo_spec):
    assert scan(load_data_spec(demo_spec)).problems == []
    raw = yaml.safe_load(demo_spec.read_text())
    raw["root"] = str(demo_spec.parent)
    raw["splits"]["also"] = {"pattern": "img000[0-2]"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = scan(load_data_spec(path))
    assert not result.errors
    assert [w.message.split(",")[0] for w in result.warnings] == [
        "3 ids are in both 'also' and 'train'"
    ]


# --- the scan cache ---------------------------------------------------------------------------------
def count_reads(monkeypatch) -> list[Path]:
    """Every file whose content the scan (or a dataset) reads, in order."""
    reads: list[Path] = []

    def counting(path):
        reads.append(Path(path))
        return read_array(path)

    monkeypatch.setattr(scan_read, "read_array", counting)
    monkeypatch.setattr(dataset_module, "read_array", counting)
    return reads


def demo_files(data: Path) -> set[Path]:
    return {p for p in data.rglob("*.png")}


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch) -> Path:
    """Each test has its own cache folder (what ``MMSEG_HEADS_CACHE_DIR`` names)."""
    folder = tmp_path / "cache_home"
    monkeypatch.setenv("MMSEG_HEADS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def settled(monkeypatch):
    """Files this test wrote a moment ago count as settled (see scan_cache.RACY_NS); the rule
    itself is tested below with its real margin."""
    monkeypatch.setattr(scan_cache, "RACY_NS", 0)


def test_a_second_scan_of_unchanged_files_reads_none(
    tmp_path, demo_spec, monkeypatch, cache_home, settled
):
    spec_path = copy_demo(demo_spec, tmp_path)
    spec = load_data_spec(spec_path)
    reads = count_reads(monkeypatch)
    first = scan(spec)
    assert sorted(reads) == sorted(demo_files(spec.root))  # each file once: 24 ids × 4 files
    assert len(reads) == 96
    assert [p.name for p in (cache_home / "scan").iterdir()] == [cache_file(spec.root).name]
    assert cache_file(spec.root).name.startswith("data-")  # the data root's folder name
    reads.clear()
    second = scan(spec)
    assert reads == []
    assert second.problems == first.problems == []
    assert second.facts == first.facts
    assert first.facts[spec.label_file("hotspots", "img0000")].values[0][0] == 0


def test_a_changed_label_file_is_read_again(tmp_path, demo_spec, monkeypatch, settled):
    spec_path = copy_demo(demo_spec, tmp_path)
    spec = load_data_spec(spec_path)
    assert scan(spec).problems == []
    label = spec_path.parent / "labels/shapes/img0003.png"
    stamp = label.stat()
    shapes = np.array(Image.open(label))
    shapes[:2, :2] = 7
    save_palette(shapes, label)
    assert (label.stat().st_mtime_ns, label.stat().st_ctime_ns) != (
        stamp.st_mtime_ns,
        stamp.st_ctime_ns,
    ), "the file system kept the time stamps: this test cannot tell a change"
    reads = count_reads(monkeypatch)
    result = scan(spec)
    assert reads == [label]  # only the changed file is read
    assert [p.message.split(";")[0] for p in result.errors] == [
        "raw label values with no class: 7 (4 px)"
    ]


def test_an_edited_spec_is_checked_against_cached_facts(tmp_path, demo_spec, monkeypatch, settled):
    """The cache keeps facts, not verdicts: a spec that no longer maps 255 fails at once."""
    assert scan(load_data_spec(demo_spec)).problems == []
    raw = yaml.safe_load(demo_spec.read_text())
    raw["root"] = str(demo_spec.parent)
    del raw["tasks"]["hotspots"]["threshold"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    reads = count_reads(monkeypatch)
    result = scan(load_data_spec(path))
    assert reads == []
    assert [p.field for p in result.errors] == ["tasks.hotspots.values"]
    assert result.errors[0].message.startswith("raw label values with no class: 255 (")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="truncated"),
        pytest.param(lambda text: "[]", id="not-a-mapping"),
        pytest.param(lambda text: text.replace('"shape":[', '"shape":["x",'), id="bad-entries"),
        pytest.param(lambda text: text.replace("mmseg_heads.scan_cache/", "other/"), id="format"),
    ],
)
def test_a_damaged_cache_is_ignored_and_rebuilt(
    tmp_path, demo_spec, monkeypatch, caplog, settled, damage
):
    spec_path = copy_demo(demo_spec, tmp_path)
    spec = load_data_spec(spec_path)
    scan(spec)
    cache = cache_file(spec.root)
    cache.write_text(damage(cache.read_text()))
    missing = spec_path.parent / "thermal/img0009.png"
    missing.unlink()
    reads = count_reads(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="mmseg_heads.data.scan_cache"):
        result = scan(spec)
    assert len(reads) == 95  # every file read again
    assert [p.message for p in result.errors] == [f"file not found: {missing} (id 'img0009')"]
    assert "ignored" in caplog.text and "Traceback" not in caplog.text
    assert len(json.loads(cache.read_text())["files"]) == 95  # rebuilt, without the lost file


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, demo_spec, monkeypatch, settled):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would go\n")
    monkeypatch.setenv("MMSEG_HEADS_CACHE_DIR", str(blocker))
    reads = count_reads(monkeypatch)
    for _ in range(2):
        assert scan(load_data_spec(demo_spec)).problems == []
    assert len(reads) == 2 * 96  # no cache, so both scans read every file
    assert blocker.read_text() == "a file where the cache folder would go\n"


def test_a_file_changed_just_before_its_read_is_not_cached(tmp_path, demo_spec, monkeypatch):
    """A change in the same time-stamp tick after the read could leave size and times as they
    were, so the cache never trusts a file that had changed a moment before it was read."""
    spec_path = copy_demo(demo_spec, tmp_path)  # copied now: every file's ctime is fresh
    spec = load_data_spec(spec_path)
    scan(spec)
    reads = count_reads(monkeypatch)
    scan(spec)
    assert len(reads) == 96


def test_inspect_twice_reads_no_file_and_prints_the_same(
    tmp_path, demo_spec, monkeypatch, capsys, cache_home, settled
):
    spec_path = copy_demo(demo_spec, tmp_path)
    reads = count_reads(monkeypatch)
    assert main(["inspect", str(spec_path), "--no-cache"]) == 0
    uncached = capsys.readouterr().out
    assert len(reads) == 96 and not cache_home.exists()  # --no-cache writes no cache
    assert main(["inspect", str(spec_path)]) == 0
    reads.clear()
    assert main(["inspect", str(spec_path)]) == 0
    assert reads == []  # neither the scan nor the class counts read a file
    assert capsys.readouterr().out == uncached + uncached
    assert "shapes: 16 labelled; pixels: background " in uncached


def _write_volumes(root: Path) -> Path:
    """Two NIfTI cases (int16 image, raw label values 0/200/500) and a spec slicing them."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    for case, depth in (("Case01", 3), ("Case02", 5)):
        (root / case).mkdir(parents=True)
        image = rng.integers(0, 3000, (12, 10, depth)).astype(np.int16)
        label = rng.choice(np.array([0, 200, 500], np.int16), (12, 10, depth))
        for name, array in (("C0", image), ("gd", label)):
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(root / case / f"{case}_{name}.nii.gz"))
    spec = {
        "modalities": {"C0": {"files": "{id}/{id}_C0.nii.gz"}},
        "tasks": {
            "anatomy": {
                "labels": "{id}/{id}_gd.nii.gz",
                "classes": ["background", "myocardium", "blood"],
                "values": {0: 0, 200: 1, 500: 2},
            },
            "blood": {
                "labels": "{id}/{id}_gd.nii.gz",
                "classes": ["background", "blood"],
                "values": {500: 1, "other": 0},
            },
        },
        "volume": {"slice_axis": 2},
        "splits": {"train": {"pattern": "Case0"}},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("kind", ["images", "volumes"])
def test_class_counts_from_the_scan_equal_reading_the_labels(tmp_path, demo_spec, kind):
    spec = load_data_spec(demo_spec if kind == "images" else _write_volumes(tmp_path))
    result = scan(spec, cache=False)
    from_scan = describe_spec(spec, scanned=result)
    assert from_scan == describe_spec(spec)  # what reading every label file gives
    text = "\n".join(from_scan)
    if kind == "volumes":
        assert "    anatomy: 8 labelled; pixels: background " in text  # 3 + 5 slices
        assert len(result.facts) == 4  # the label file both tasks share was read once
    else:
        assert "    hotspots: 16 labelled; pixels: background " in text


def test_inspect_lists_a_class_that_never_occurs_and_flags_it(demo_spec, tmp_path, capsys):
    import yaml

    from mmseg_heads.cli.main import main

    raw = yaml.safe_load(demo_spec.read_text())
    raw["root"] = str((demo_spec.parent / raw.get("root", ".")).resolve())
    raw["tasks"]["shapes"]["classes"] = [*raw["tasks"]["shapes"]["classes"], "hexagon"]
    raw["tasks"]["shapes"].pop("colors", None)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    assert main(["inspect", str(spec), "--no-cache"]) == 0
    out = capsys.readouterr().out
    shapes = next(line for line in out.splitlines() if "shapes:" in line and "pixels" in line)
    assert "hexagon 0" in shapes and shapes.endswith("(no pixel of hexagon!)")
    hotspots = next(line for line in out.splitlines() if "hotspots:" in line and "pixels" in line)
    assert "no pixel" not in hotspots


def test_the_scan_draws_a_bar_on_a_terminal_and_nothing_when_piped(demo_spec, monkeypatch):
    import io
    import sys

    from mmseg_heads.data.spec import load_data_spec

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    spec = load_data_spec(demo_spec)
    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        scan_module.scan(spec, cache=False)
        text = stream.getvalue()
        assert ("scan:" in text and "file" in text) == drawn, text
        assert ("\r" in text) == drawn
