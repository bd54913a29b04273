"""`mmseg-heads predict` and `mmseg-heads export` end to end, on a run trained once per module.

The run is the demo data set (optical RGB + thermal grey; tasks `shapes`, 4 classes, and
`hotspots`, 2 classes) trained for one epoch with two ResNet-18 encoders.
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torch.nn import functional as F

from mmseg_heads import atomic
from mmseg_heads.cli.main import main
from mmseg_heads.data.dataset import MultiModalDataset
from mmseg_heads.data.patterns import match_pattern
from mmseg_heads.data.spec import load_data_spec
from mmseg_heads.engine import export as export_module
from mmseg_heads.engine import predict as predict_module
from mmseg_heads.engine.checkpoint import resolve_checkpoint
from mmseg_heads.engine.export import ExportCheckError, export_onnx
from mmseg_heads.engine.predict_inputs import PredictInput, match_input
from mmseg_heads.engine.predict_segment import Sample, read_sample
from mmseg_heads.engine.predict_write import (
    display_rgb,
    overlay,
    write_nifti_mask,
    write_overlay,
    write_png_mask,
)
from mmseg_heads.engine.run import load_run
from mmseg_heads.errors import UserError, WriteError
from mmseg_heads.palette import default_palette

#: 0.3 M parameters: a training test writes checkpoints of a few MB, not hundreds.
TINY_ENCODER = "tu-mobilenetv3_small_050"

CLASSES = {"shapes": 4, "hotspots": 2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_spec) -> Path:
    """A run trained for one epoch on the demo data (tiny decoder, 64×64 crops, no workers)."""
    root = tmp_path_factory.mktemp("predict_run")
    config = {
        "data": str(demo_spec),
        "model": {
            "encoders": {"optical": TINY_ENCODER, "thermal": TINY_ENCODER},
            "decoder_channels": [32, 16, 16, 8, 8],
        },
        "train": {"epochs": 1, "batch_size": 4, "crop": 64, "workers": 0, "seed": 0},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), f"train.out={root / 'run'}"]) == 0
    return root / "run"


@pytest.fixture(autouse=True)
def build_each_model_once(monkeypatch):
    """Building the model (smp encoders, a probe forward pass) is most of a command's time here:
    `predict` and `export` get one model per (checkpoint, data spec) for the whole module.
    Neither changes the model (eval mode, no gradients)."""
    for module in (predict_module, export_module):
        monkeypatch.setattr(module, "load_run", cached_load_run)


_RUNS: dict[tuple[str, str | None], tuple] = {}


def cached_load_run(checkpoint, data=None):
    key = (str(resolve_checkpoint(checkpoint)), None if data is None else str(data))
    if key not in _RUNS:
        _RUNS[key] = load_run(checkpoint, data)
    return _RUNS[key]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_pair(root: Path, sample_id: str, height: int, width: int, seed: int = 0) -> None:
    """``root/optical/<id>.png`` (RGB) and ``root/thermal/<id>.png`` (grey), as the spec has."""
    rng = np.random.default_rng(seed)
    (root / "optical").mkdir(parents=True, exist_ok=True)
    (root / "thermal").mkdir(parents=True, exist_ok=True)
    optical = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(optical, "RGB").save(root / "optical" / f"{sample_id}.png")
    thermal = rng.integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(thermal, "L").save(root / "thermal" / f"{sample_id}.png")


class FullDisk:
    """``atomic.open`` on a disk with ``free`` bytes left for each file: a write that goes beyond
    gets its first part into the file, then ENOSPC, as a real disk filling up mid-file does.

    Attributes:
        cut: ``(file, bytes on disk when the write failed, bytes the writer tried to put there)``
            for each failed write.
    """

    def __init__(self, free: int):
        self.free = free
        self.cut: list[tuple[Path, int, int]] = []

    def open(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return _FillingFile(handle, Path(path), self) if "w" in mode else handle


class _FillingFile:
    def __init__(self, handle, path: Path, disk: FullDisk):
        self.handle, self.path, self.disk, self.written = handle, path, disk, 0

    def write(self, data) -> int:
        room = self.disk.free - self.written
        if len(data) > room:
            self.handle.write(data[:room])
            self.handle.flush()
            self.disk.cut.append((self.path, self.path.stat().st_size, self.written + len(data)))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (relative): a file's bytes, ``None`` for a folder."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def full_disk_message(path: Path) -> str:
    return (
        f"error: {path}: cannot write: No space left on device (ENOSPC); free some space, or "
        "choose another output folder (a previous version of the file is unchanged)"
    )


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[:3] == [0, 0, 0]  # class 0 is black
        return np.asarray(image)


# --- matching inputs (no model) -----------------------------------------------------------------
def test_patterns_give_id_and_root_from_the_end_of_the_path():
    assert match_pattern(Path("/data/in/optical/img7.png"), "optical/{id}.png") == (
        "img7",
        Path("/data/in"),
    )
    assert match_pattern(Path("/d/Case3/Case3_LGE.nii.gz"), "{id}/{id}_LGE.nii.gz") == (
        "Case3",
        Path("/d"),
    )
    assert match_pattern(Path("/d/Case3/Case4_LGE.nii.gz"), "{id}/{id}_LGE.nii.gz") is None
    assert match_pattern(Path("/d/thermal/img7.png"), "optical/{id}.png") is None
    assert match_pattern(Path("x_optical.png"), "{id}_optical.png") == ("x", Path("."))


def test_input_matches_its_modality(demo_spec):
    spec = load_data_spec(demo_spec)
    assert match_input(Path("a/b/thermal/img1.png"), spec) == ("thermal", "img1", Path("a/b"))


def test_inputs_are_read_and_normalised_as_training_reads_them(demo_spec):
    spec = load_data_spec(demo_spec)
    dataset = MultiModalDataset(spec, "val")
    sample_id = dataset.ids[0]
    files = {m: spec.modality_file(m, sample_id) for m in spec.modalities}
    sample = read_sample(PredictInput(sample_id, files), spec)
    expected = dataset.read_images(sample_id)
    for modality, image in expected.items():
        np.testing.assert_array_equal(sample.images[modality][0], image)


def test_default_palette_is_distinct_with_black_background():
    palette = default_palette(40)
    assert palette[0] == (0, 0, 0) and len(set(palette)) == 40


#: `colors` for the demo's `shapes` task: one class as a list, one as hex; the others unlisted.
SHAPES_COLORS = {"circle": [255, 255, 0], "triangle": "#0080ff"}
SHAPES_PALETTE = [(0, 0, 0), (255, 255, 0), default_palette(4)[2], (0, 128, 255)]


def coloured_spec(demo_spec: Path, folder: Path) -> Path:
    """The demo spec with SHAPES_COLORS, written to ``folder`` (``root``: the demo data)."""
    spec = yaml.safe_load(demo_spec.read_text())
    spec["root"] = str(demo_spec.parent)
    spec["tasks"]["shapes"]["colors"] = SHAPES_COLORS
    path = folder / "coloured.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_overlay_blends_each_class_with_its_spec_colour(demo_spec, tmp_path):
    spec = load_data_spec(coloured_spec(demo_spec, tmp_path))
    mask = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    raw = np.random.default_rng(5).integers(0, 256, (1, 2, 4, 3)).astype(np.uint8)
    sample = Sample("a", images={}, raw=raw)
    written = predict_module.write_masks(
        sample, {"shapes": mask[None]}, spec, tmp_path / "out", with_overlay=True
    )
    assert written == [tmp_path / "out/shapes/a.png", tmp_path / "out/shapes/a_overlay.png"]
    shown = display_rgb(raw[0]).astype(np.float64)
    colours = np.array(SHAPES_PALETTE, np.float64)[mask]
    # overlay(): class > 0 is half image, half class colour; class 0 is the image alone.
    expected = np.where((mask > 0)[..., None], 0.5 * shown + 0.5 * colours, shown).round()
    with Image.open(written[1]) as image:
        np.testing.assert_array_equal(np.asarray(image), expected.astype(np.uint8))
    with Image.open(written[0]) as image:
        assert image.getpalette()[:12] == [c for colour in SHAPES_PALETTE for c in colour]
        np.testing.assert_array_equal(np.asarray(image), mask)


# --- predict ------------------------------------------------------------------------------------
def test_predict_png_of_any_size_writes_one_mask_per_task(run_dir, tmp_path, capsys):
    write_pair(tmp_path / "in", "odd", height=50, width=70)
    out = tmp_path / "pred"
    code, stdout, err = run_cli(
        capsys,
        "predict",
        run_dir,
        tmp_path / "in" / "optical" / "odd.png",
        "--out",
        out,
        "--overlay",
    )
    assert code == 0, err
    for task, classes in CLASSES.items():
        mask = read_mask(out / task / "odd.png")
        assert mask.shape == (50, 70)
        assert mask.max() < classes
        with Image.open(out / task / "odd_overlay.png") as overlay:
            assert overlay.mode == "RGB" and overlay.size == (70, 50)
        assert str(out / task / "odd.png") in stdout


def coloured_checkpoint(run_dir: Path, folder: Path) -> Path:
    """A copy of the run's checkpoint whose stored data spec has SHAPES_COLORS (as a run trained
    on a spec with `colors` stores it)."""
    state = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    state["data_spec"]["tasks"]["shapes"]["colors"] = SHAPES_COLORS
    path = folder / "coloured.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("source", ["checkpoint", "--data"])
def test_predict_writes_the_spec_colors_and_the_same_indices(
    run_dir, demo_spec, tmp_path, capsys, source
):
    """The colours come from the spec predict reads: the checkpoint's own, or --data's."""
    write_pair(tmp_path / "in", "col", height=40, width=44, seed=2)
    image = tmp_path / "in" / "optical" / "col.png"
    code, _, err = run_cli(capsys, "predict", run_dir, image, "--out", tmp_path / "plain")
    assert code == 0, err
    if source == "checkpoint":
        args = [coloured_checkpoint(run_dir, tmp_path)]
    else:
        args = [run_dir, "--data", coloured_spec(demo_spec, tmp_path)]
    code, _, err = run_cli(capsys, "predict", *args, image, "--out", tmp_path / "coloured")
    assert code == 0, err
    for task, palette in (("shapes", SHAPES_PALETTE), ("hotspots", default_palette(2))):
        with Image.open(tmp_path / "coloured" / task / "col.png") as coloured:
            assert coloured.getpalette()[: 3 * len(palette)] == [c for rgb in palette for c in rgb]
            np.testing.assert_array_equal(
                np.asarray(coloured), read_mask(tmp_path / "plain" / task / "col.png")
            )


def test_predict_with_explicit_modality_files(run_dir, tmp_path, capsys):
    write_pair(tmp_path, "pic", height=40, width=33, seed=1)
    out = tmp_path / "pred"
    code, _, err = run_cli(
        capsys,
        "predict",
        run_dir / "checkpoints" / "best.pt",
        "--out",
        out,
        "--modality",
        f"optical={tmp_path / 'optical' / 'pic.png'}",
        "--modality",
        f"thermal={tmp_path / 'thermal' / 'pic.png'}",
    )
    assert code == 0, err
    assert read_mask(out / "shapes" / "pic.png").shape == (40, 33)
    assert read_mask(out / "hotspots" / "pic.png").max() < CLASSES["hotspots"]


def test_predict_missing_second_modality_exits_2_naming_the_file(run_dir, tmp_path, capsys):
    write_pair(tmp_path, "lone", height=32, width=32)
    (tmp_path / "thermal" / "lone.png").unlink()
    code, _, err = run_cli(
        capsys, "predict", run_dir, tmp_path / "optical" / "lone.png", "--out", tmp_path / "p"
    )
    assert code == 2
    assert str(tmp_path / "thermal" / "lone.png") in err
    assert "modalities.thermal.files" in err and "Traceback" not in err

    code, _, err = run_cli(
        capsys,
        "predict",
        run_dir,
        "--out",
        tmp_path / "p",
        "--modality",
        f"optical={tmp_path / 'optical' / 'lone.png'}",
    )
    assert code == 2 and "--modality" in err and "thermal" in err

    # --allow-missing: the trunk leaves the missing modality out of the fusion.
    code, _, err = run_cli(
        capsys,
        "predict",
        run_dir,
        tmp_path / "optical" / "lone.png",
        "--out",
        tmp_path / "p",
        "--allow-missing",
    )
    assert code == 0, err
    assert read_mask(tmp_path / "p" / "hotspots" / "lone.png").shape == (32, 32)


def test_predict_nifti_volume_keeps_shape_and_affine(run_dir, demo_spec, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    # The demo model, reading another layout (--data): same modalities, channels and tasks.
    spec = yaml.safe_load(demo_spec.read_text())
    spec["modalities"]["optical"]["files"] = "{id}/{id}_optical.nii.gz"
    spec["modalities"]["thermal"]["files"] = "{id}/{id}_thermal.nii.gz"
    for task in spec["tasks"]:  # `volume` wants every pattern to name volumes (none is read)
        spec["tasks"][task]["labels"] = f"{{id}}/{{id}}_{task}.nii.gz"
    spec["volume"] = {"slice_axis": 2}
    spec["splits"] = {"test": {"pattern": "."}}
    spec_path = tmp_path / "nifti.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    affine = np.array(
        [[0.0, -0.8, 0.0, 12.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 4.0], [0, 0, 0, 1]]
    )
    rng = np.random.default_rng(0)
    case = tmp_path / "Case01"
    case.mkdir()
    optical = rng.integers(0, 3000, (64, 48, 3, 3)).astype(np.int16)  # X×Y×Z×channels
    thermal = rng.normal(100, 20, (64, 48, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(optical, affine), str(case / "Case01_optical.nii.gz"))
    nib.save(nib.Nifti1Image(thermal, affine), str(case / "Case01_thermal.nii.gz"))

    out = tmp_path / "pred"
    code, _, err = run_cli(
        capsys,
        "predict",
        run_dir,
        case / "Case01_thermal.nii.gz",
        "--out",
        out,
        "--data",
        spec_path,
    )
    assert code == 0, err
    for task, classes in CLASSES.items():
        mask = nib.load(str(out / task / "Case01.nii.gz"))
        assert mask.shape == (64, 48, 3)
        assert np.allclose(mask.affine, affine)
        assert np.asanyarray(mask.dataobj).max() < classes


def _marker():
    """The text chunk predict writes into its PNGs (it replaces only files that carry it)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "mmseg_heads predict")
    return info


def test_png_masks_and_overlays_are_the_files_pil_wrote_before(tmp_path):
    """Written atomically (encoded in memory, temp file, rename): the same bytes as
    ``Image.save(path)`` with predict's marker chunk; the indices and palette read back."""
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 5, (37, 53)).astype(np.uint8)
    palette = default_palette(5)
    flat = [channel for colour in palette for channel in colour]
    path = write_png_mask(mask, palette, tmp_path / "shapes" / "a.png")  # creates the folder
    reference = Image.fromarray(mask, "P")
    reference.putpalette(flat)
    reference.save(tmp_path / "reference.png", pnginfo=_marker())
    assert path.read_bytes() == (tmp_path / "reference.png").read_bytes()
    with Image.open(path) as image:
        assert image.mode == "P" and image.getpalette()[: len(flat)] == flat
        np.testing.assert_array_equal(np.asarray(image), mask)

    raw = rng.integers(0, 256, (1, 37, 53, 3)).astype(np.uint8)
    sample = Sample("a", images={}, raw=raw)
    path = write_overlay(sample, mask[None], palette, tmp_path / "shapes" / "a_overlay.png")
    expected = overlay(raw[0], mask, palette)
    Image.fromarray(expected, "RGB").save(tmp_path / "reference_overlay.png", pnginfo=_marker())
    assert path.read_bytes() == (tmp_path / "reference_overlay.png").read_bytes()
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), expected)
    assert sorted(p.name for p in (tmp_path / "shapes").iterdir()) == ["a.png", "a_overlay.png"]


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [("Nifti1Image", ".nii.gz"), ("Nifti2Image", ".nii.gz"), ("Nifti1Image", ".nii")],
)
def test_nifti_masks_are_the_files_nibabel_wrote_before(tmp_path, kind, suffix):
    """The same bytes as ``nibabel.save(image, path)`` (gzipped as nibabel gzips), so the mask
    reads back with the values predict produced and the input's affine, zooms and header."""
    nib = pytest.importorskip("nibabel")
    from mmseg_heads.data.readers import read_nifti_geometry

    affine = np.array(
        [[0.0, -0.8, 0.0, 12.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 4.0], [0, 0, 0, 1]]
    )
    rng = np.random.default_rng(4)
    source = tmp_path / f"case{suffix}"
    nib.save(getattr(nib, kind)(rng.normal(size=(20, 16, 5)).astype(np.float32), affine), source)
    geometry = read_nifti_geometry(source)
    mask = rng.integers(0, 4, (20, 16, 5)).astype(np.uint8)

    path = write_nifti_mask(mask, geometry, 4, tmp_path / "out" / f"mask{suffix}")
    reference = getattr(nib, kind)(mask, geometry.affine, header=geometry.header.copy())
    reference.set_data_dtype(np.uint8)
    reference.header.set_slope_inter(1.0, 0.0)
    reference.header["cal_min"], reference.header["cal_max"] = 0, 3
    reference.header["descrip"] = b"mmseg_heads predict"  # marks it as predict's
    nib.save(reference, tmp_path / f"reference{suffix}")
    assert path.read_bytes() == (tmp_path / f"reference{suffix}").read_bytes()

    written = nib.load(path)
    assert type(written).__name__ == kind
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mask)
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    assert written.header.get_zooms() == geometry.header.get_zooms()
    assert float(written.header["cal_max"]) == 3.0
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"mask{suffix}"]


def test_predict_on_a_full_disk_exits_2_and_keeps_the_previous_masks(
    run_dir, tmp_path, capsys, monkeypatch
):
    """The disk fills in the middle of the first mask file: one line naming that file and
    ENOSPC, no traceback, the masks of an earlier run byte for byte, no temp file left."""
    write_pair(tmp_path / "in", "full", height=40, width=36)
    out = tmp_path / "pred"
    for task in CLASSES:  # masks of an earlier prediction, in another palette
        (out / task).mkdir(parents=True)
        Image.fromarray(np.ones((40, 36), np.uint8), "P").save(
            out / task / "full.png", pnginfo=_marker()
        )
    before = tree(out)
    disk = FullDisk(free=40)  # a mask PNG of 40×36 takes about 100 bytes
    monkeypatch.setattr(atomic, "open", disk.open, raising=False)
    image = tmp_path / "in" / "optical" / "full.png"
    code, stdout, err = run_cli(capsys, "predict", run_dir, image, "--out", out, "--overlay")
    assert code == 2, err
    target = out / "shapes" / "full.png"
    assert err.strip() == full_disk_message(target), err
    assert stdout == ""
    ((temp, on_disk, tried),) = disk.cut  # the PNG was half written into a temp file beside it
    assert temp.parent == out / "shapes" and temp.name.startswith(".full.png.")
    assert on_disk == 40 < tried
    assert tree(out) == before  # no temp file, no new file, the old masks unchanged


def test_a_full_disk_while_writing_a_nifti_mask_keeps_the_previous_one(tmp_path, monkeypatch):
    nib = pytest.importorskip("nibabel")
    from mmseg_heads.data.readers import read_nifti_geometry

    source = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 20, 4), np.float32), np.diag([2.0, 2, 3, 1])), source)
    out = tmp_path / "out"
    out.mkdir()
    (out / "case.nii.gz").write_bytes(b"an earlier mask")
    disk = FullDisk(free=200)
    monkeypatch.setattr(atomic, "open", disk.open, raising=False)
    mask = np.random.default_rng(5).integers(0, 3, (30, 20, 4))
    with pytest.raises(WriteError) as info:
        write_nifti_mask(mask, read_nifti_geometry(source), 3, out / "case.nii.gz")
    assert f"error: {info.value}" == full_disk_message(out / "case.nii.gz")
    assert len(disk.cut) == 1 and disk.cut[0][1] == 200 < disk.cut[0][2]
    assert tree(out) == {"case.nii.gz": b"an earlier mask"}


# --- export -------------------------------------------------------------------------------------
def test_export_matches_pytorch_at_two_sizes(run_dir, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime", reason="pip install 'mmseg-heads[export]'")
    out = tmp_path / "model.onnx"
    # The TorchScript exporter is the one `auto` ends with for this model (see the fallback test).
    code, stdout, err = run_cli(
        capsys, "export", run_dir, "--out", out, "--size", 64, 96, "--exporter", "torchscript"
    )
    assert code == 0, err
    assert "check 1×64×96" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temp file left

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["optical", "thermal"]
    assert [o.name for o in session.get_outputs()] == ["shapes", "hotspots"]
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    _, model, _, _ = cached_load_run(run_dir)
    model.eval()
    generator = torch.Generator().manual_seed(1)
    # The self-check's sizes (export size, then +32 and +64 with a batch of 2), other inputs.
    for batch, height, width in ((1, 64, 96), (2, 96, 160)):
        images = {
            "optical": torch.randn(batch, 3, height, width, generator=generator),
            "thermal": torch.randn(batch, 1, height, width, generator=generator),
        }
        with torch.inference_mode():
            expected = model(images)
        got = session.run(["shapes", "hotspots"], {k: v.numpy() for k, v in images.items()})
        for task, value in zip(("shapes", "hotspots"), got, strict=True):
            assert value.shape == (batch, CLASSES[task], height, width)
            assert np.abs(value - expected[task].numpy()).max() <= 1e-4


def test_export_without_onnxruntime_exits_2_with_the_install_command(
    run_dir, tmp_path, capsys, monkeypatch
):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    code, _, err = run_cli(capsys, "export", run_dir, "--out", tmp_path / "m.onnx")
    assert code == 2 and 'pip install "mmseg-heads[export]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_on_a_full_disk_exits_2_and_keeps_the_previous_file(
    run_dir, tmp_path, capsys, monkeypatch
):
    """The disk fills in the middle of the .onnx file: one line naming it and ENOSPC, no
    traceback, the earlier export byte for byte, no temp file left."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export\n" * 1000)
    before = tree(tmp_path)
    disk = FullDisk(free=4096)
    monkeypatch.setattr(atomic, "open", disk.open, raising=False)
    code, stdout, err = run_cli(
        capsys, "export", run_dir, "--out", out, "--size", 32, 32, "--exporter", "torchscript",
        "--overwrite",  # the earlier file is not an export of ours
    )  # fmt: skip
    assert code == 2, err
    assert err.strip() == full_disk_message(out), err
    assert stdout == ""
    ((temp, on_disk, tried),) = disk.cut  # two ResNet-18 encoders: tens of MB, 4 KiB written
    assert temp.parent == tmp_path and temp.name.startswith(".model.onnx.")
    assert on_disk == 4096 and tried > 1_000_000
    assert tree(tmp_path) == before


class TinySegmenter(nn.Module):
    """Two modalities in, two tasks out, stride 4: enough of a MultiTaskSegmenter to export."""

    def __init__(self):
        super().__init__()
        self.trunk = SimpleNamespace(max_stride=4)
        self.optical = nn.Conv2d(3, 4, 3, padding=1)
        self.thermal = nn.Conv2d(1, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 4, stride=4)

    def forward(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.optical(images["optical"]) + self.thermal(images["thermal"])
        y = F.interpolate(self.down(x), scale_factor=4.0)
        return {"shapes": x + y, "hotspots": (x - y)[:, :2]}


class DriftingSegmenter(TinySegmenter):
    """Adds a Python counter: an exporter freezes its value, so the graph disagrees later."""

    calls = 0

    def forward(self, images):
        self.calls += 1
        return {task: value + self.calls for task, value in super().forward(images).items()}


class BranchingSegmenter(TinySegmenter):
    """Branches on a tensor's value, as the trunk does on which modalities are present."""

    def forward(self, images):
        logits = super().forward(images)
        if bool(images["thermal"].abs().sum() >= 0):  # always true, but data-dependent
            return logits
        return {task: -value for task, value in logits.items()}


TINY = {"channels": {"optical": 3, "thermal": 1}, "tasks": ["shapes", "hotspots"]}


def test_default_exporter_names_dims_when_torch_export_works(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")
    result = export_onnx(TinySegmenter(), tmp_path / "tiny.onnx", size=(8, 12), **TINY)
    assert result.exporter == "dynamo" and not result.notes
    assert result.inputs == {
        "optical": ["batch", 3, "height", "width"],
        "thermal": ["batch", 1, "height", "width"],
    }
    assert result.outputs["hotspots"] == ["batch", 2, "height", "width"]
    assert all(check.worst <= 1e-5 for check in result.checks)
    session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"))
    assert [o.name for o in session.get_outputs()] == ["shapes", "hotspots"]


def test_export_that_disagrees_with_pytorch_fails_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ExportCheckError, match=r"differ from PyTorch by up to .*1×8×12"):
        export_onnx(
            DriftingSegmenter(),
            tmp_path / "drift.onnx",
            size=(8, 12),
            exporter="torchscript",
            **TINY,
        )
    assert list(tmp_path.iterdir()) == []


def test_export_size_must_be_a_multiple_of_the_stride(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UserError, match=r"--size: 6 9: .* multiples of 4 .* e\.g\. 8 12"):
        export_onnx(TinySegmenter(), tmp_path / "m.onnx", size=(6, 9), **TINY)


def test_default_exporter_falls_back_to_torchscript_on_data_dependent_branches(tmp_path):
    pytest.importorskip("onnxruntime")
    result = export_onnx(BranchingSegmenter(), tmp_path / "b.onnx", size=(8, 12), **TINY)
    assert result.exporter == "torchscript"
    assert len(result.notes) == 1 and result.notes[0].startswith("dynamo exporter")
    assert all(check.worst <= 1e-5 for check in result.checks)


def _fail(error: int):
    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    return fail


@pytest.mark.parametrize(
    ("where", "error", "reason"),
    [
        ("mkstemp", errno.EACCES, "Permission denied (EACCES); choose an output folder you may"),
        ("fsync", errno.ENOSPC, "No space left on device (ENOSPC); free some space"),
        ("replace", errno.EDQUOT, "Disk quota exceeded (EDQUOT); free some space within your"),
    ],
)
def test_export_write_failures_are_write_errors(tmp_path, monkeypatch, where, error, reason):
    """Creating the temp file, flushing it to disk, renaming it: each failure is a WriteError
    naming the file, after the check, with the earlier export untouched and nothing left over."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    out.write_bytes(b"an earlier export")
    # Only atomic.py's view of the module fails: the exporters may use tempfile and os freely.
    name = "tempfile" if where == "mkstemp" else "os"
    failing = SimpleNamespace(**{**vars(getattr(atomic, name)), where: _fail(error)})
    monkeypatch.setattr(atomic, name, failing)
    with pytest.raises(WriteError) as info:
        export_onnx(TinySegmenter(), out, size=(8, 12), exporter="torchscript", **TINY)
    assert str(info.value).startswith(f"{out}: cannot write: {reason}")
    assert info.value.errno == error
    assert tree(tmp_path) == {"tiny.onnx": b"an earlier export"}


# --- sliding windows and test-time flips ------------------------------------------------------


def test_predict_windows_and_flips_give_the_masks_segment_planes_gives(run_dir, tmp_path, capsys):
    from mmseg_heads.engine.inference import Inference
    from mmseg_heads.engine.precision import resolve_precision
    from mmseg_heads.engine.predict_inputs import resolve_inputs
    from mmseg_heads.engine.predict_segment import read_sample, segment

    write_pair(tmp_path / "in", "wide", height=70, width=100, seed=3)
    source = tmp_path / "in" / "optical" / "wide.png"
    flags = ["--window", 32, "--overlap", 0.25, "--tta", "hflip,vflip", "--batch-size", 3]
    code, _, err = run_cli(capsys, "predict", run_dir, source, "--out", tmp_path / "w", *flags)
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", run_dir, source, "--out", tmp_path / "whole")
    assert code == 0, err
    run = cached_load_run(run_dir)
    spec = run.config.spec
    sample = read_sample(resolve_inputs(spec, [source], [], allow_missing=False)[0], spec)
    options = Inference(32, 0.25, ("hflip", "vflip"))
    cpu = torch.device("cpu")
    precision = resolve_precision(run.config.train["precision"], cpu)
    expected = segment(
        run.model, sample.images, device=cpu, precision=precision, batch_size=3, inference=options
    )
    differ = 0
    for task in CLASSES:
        windowed = read_mask(tmp_path / "w" / task / "wide.png")
        assert np.array_equal(windowed, expected[task][0]), task
        differ += int((windowed != read_mask(tmp_path / "whole" / task / "wide.png")).sum())
    assert differ > 0  # 32-pixel windows on a 70×100 image do change some pixels


@pytest.mark.parametrize(
    "flags,message",
    [
        (
            ["--window", 48],
            "--window: 48 is not a multiple of the model's largest stride 32 (try 64)",
        ),
        (["--window", 0], "--window: 0 is below the minimum 1"),
        (["--overlap", 1], "--overlap: must be below 1"),
        (["--tta", "hflip,rot90"], "--tta: 'rot90' is not one of hflip, vflip"),
    ],
)
def test_bad_inference_flags_exit_2_naming_the_flag(run_dir, tmp_path, capsys, flags, message):
    write_pair(tmp_path / "in", "x", height=40, width=40)
    source = tmp_path / "in" / "optical" / "x.png"
    code, _, err = run_cli(capsys, "predict", run_dir, source, "--out", tmp_path / "o", *flags)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_evaluate_records_its_inference_options(run_dir, tmp_path, capsys):
    out = tmp_path / "report"
    flags = ["--window", 32, "--tta", "vflip", "--out", out]
    code, stdout, err = run_cli(capsys, "evaluate", run_dir, "--split", "val", *flags)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["inference"] == {"window": 32, "overlap": 0.5, "tta": ["vflip"], "nesting": "off"}
    expected = "32-pixel sliding windows, overlap 0.5, Gaussian-weighted; test-time flips vflip"
    assert expected in (out / "report.md").read_text()
    assert expected in (out / "report.html").read_text()
    code, stdout, err = run_cli(capsys, "report", out)
    assert code == 0 and "| inference | " + expected in stdout


# --- another data spec: preprocessing differences and missing modalities ----------------------


def _external_spec(demo_spec: Path, folder: Path, edit) -> Path:
    """The demo spec rewritten with ``edit(raw)``, its root pointing at the demo data."""
    raw = yaml.safe_load(demo_spec.read_text())
    raw["root"] = str(demo_spec.parent)
    edit(raw)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "external.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_evaluate_without_a_modality_runs_the_missing_modality_path(
    run_dir, demo_spec, tmp_path, capsys, caplog
):
    from mmseg_heads.engine.evaluate import evaluate
    from mmseg_heads.engine.evaluator import run_evaluation
    from mmseg_heads.engine.loaders import eval_loader
    from mmseg_heads.engine.precision import resolve_precision

    def drop_thermal(raw):
        del raw["modalities"]["thermal"]
        raw["tasks"]["hotspots"]["annotated_on"] = ["optical"]

    spec = _external_spec(demo_spec, tmp_path, drop_thermal)
    out = tmp_path / "report"
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        code, _, err = run_cli(capsys, "evaluate", run_dir, "--data", spec, "--out", out)
    assert code == 0, err
    assert f"{spec} has no thermal: the model runs without it" in caplog.text
    assert "trained without model.modality_dropout" in caplog.text  # the demo run had none
    report = json.loads((out / "report.json").read_text())
    assert report["missing_modalities"] == ["thermal"]
    assert list(report["preprocessing"]["modalities"]) == ["optical"]
    # the scores are those of the full model with thermal left out of its input
    run = load_run(run_dir)
    loader = eval_loader(run.config.spec, "val", 4, 0)
    cpu = torch.device("cpu")
    precision = resolve_precision(run.config.train["precision"], cpu)
    without = run_evaluation(
        run.model, loader, run.config.spec, device=cpu, precision=precision, missing=("thermal",)
    )
    for task, matrix in without.matrices.items():
        assert report["tasks"][task]["confusion_matrix"] == matrix.matrix.tolist(), task
    with_all = evaluate(run_dir)
    assert with_all["missing_modalities"] == []
    assert with_all["tasks"]["hotspots"] != report["tasks"]["hotspots"]


def test_evaluate_warns_once_per_preprocessing_difference(
    run_dir, demo_spec, tmp_path, capsys, caplog
):
    def renormalise(raw):
        raw["modalities"]["optical"]["normalize"] = "minmax"
        raw["modalities"]["thermal"]["clip_percentiles"] = [1, 99]

    spec = _external_spec(demo_spec, tmp_path, renormalise)
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        code, _, err = run_cli(capsys, "evaluate", run_dir, "--data", spec, "--out", tmp_path / "r")
    assert code == 0, err
    text = caplog.text
    assert (
        f"modalities.optical.normalize is 'minmax' in {spec} but was 'zscore' in training" in text
    )
    assert (
        f"modalities.thermal.clip_percentiles is [1, 99] in {spec} but was None in training" in text
    )
    assert text.count("the model sees values unlike those it learnt from") == 2
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["preprocessing"]["modalities"]["optical"]["normalize"] == "minmax"
    caplog.clear()  # the run's own spec: no warning
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        code, _, err = run_cli(capsys, "evaluate", run_dir, "--out", tmp_path / "own")
    assert code == 0 and "warning" not in caplog.text


def test_a_spec_that_adds_or_changes_a_modality_is_refused(run_dir, demo_spec, tmp_path, capsys):
    def add_depth(raw):
        raw["modalities"]["depth"] = {"files": "thermal/{id}.png", "channels": 1}

    spec = _external_spec(demo_spec, tmp_path, add_depth)
    code, _, err = run_cli(capsys, "evaluate", run_dir, "--data", spec, "--out", tmp_path / "r")
    assert code == 2
    assert f"{spec}: modalities: modalities" in err and "may leave modalities out" in err


def test_predict_never_writes_over_a_file_it_did_not_write(run_dir, tmp_path, capsys):
    write_pair(tmp_path / "in", "odd", height=40, width=48)
    source = tmp_path / "in" / "optical" / "odd.png"
    out = tmp_path / "pred"
    mine = out / "shapes" / "odd.png"
    mine.parent.mkdir(parents=True)
    Image.fromarray(np.full((5, 5), 7, np.uint8), "L").save(mine)  # the user's own file
    before = mine.read_bytes()
    code, _, err = run_cli(capsys, "predict", run_dir, source, "--out", out)
    assert code == 2 and "Traceback" not in err
    assert f"--out: would overwrite {mine}, which predict did not write" in err
    assert mine.read_bytes() == before and not (out / "hotspots" / "odd.png").exists()
    # --overwrite replaces it; and a second predict replaces predict's own masks without asking
    assert run_cli(capsys, "predict", run_dir, source, "--out", out, "--overwrite")[0] == 0
    assert read_mask(mine).shape == (40, 48)
    code, _, err = run_cli(capsys, "predict", run_dir, source, "--out", out, "--overlay")
    assert code == 0, err
    with Image.open(out / "shapes" / "odd_overlay.png") as overlay:
        assert overlay.info.get("Software") == "mmseg_heads predict"


def test_export_never_writes_over_a_file_it_did_not_write(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    out.write_text("my notes\n")
    flags = ["--size", 32, 32, "--exporter", "torchscript"]
    code, _, err = run_cli(capsys, "export", run_dir, "--out", out, *flags)
    assert code == 2 and "Traceback" not in err
    assert f"--out: would overwrite {out}, which export did not write; choose another" in err
    assert out.read_text() == "my notes\n"
    assert run_cli(capsys, "export", run_dir, "--out", out, *flags, "--overwrite")[0] == 0
    first = out.read_bytes()
    assert run_cli(capsys, "export", run_dir, "--out", out, *flags)[0] == 0  # ours: replaced
    assert out.read_bytes() == first


def test_predict_with_a_spec_without_a_modality_runs_without_it(
    run_dir, demo_spec, tmp_path, capsys
):
    def drop_thermal(raw):
        del raw["modalities"]["thermal"]
        raw["tasks"]["hotspots"]["annotated_on"] = ["optical"]

    spec = _external_spec(demo_spec, tmp_path, drop_thermal)
    write_pair(tmp_path / "in", "solo", height=40, width=40)
    source = tmp_path / "in" / "optical" / "solo.png"
    code, _, err = run_cli(
        capsys, "predict", run_dir, source, "--data", spec, "--out", tmp_path / "o"
    )
    assert code == 0, err
    # the masks are those of the full model with thermal left out of its input
    from mmseg_heads.engine.precision import resolve_precision
    from mmseg_heads.engine.predict_inputs import resolve_inputs
    from mmseg_heads.engine.predict_segment import read_sample, segment

    run = load_run(run_dir, spec)
    (item,) = resolve_inputs(run.config.spec, [source], [], allow_missing=False)
    sample = read_sample(item, run.config.spec)
    assert list(sample.images) == ["optical"]
    cpu = torch.device("cpu")
    masks = segment(
        run.model, sample.images, device=cpu,
        precision=resolve_precision(run.config.train["precision"], cpu),
    )  # fmt: skip
    for task in CLASSES:
        np.testing.assert_array_equal(read_mask(tmp_path / "o" / task / "solo.png"), masks[task][0])
