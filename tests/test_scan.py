"""The data scan reports every planted problem at once, naming the files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mmseg_heads.cli.main import main
from mmseg_heads.data.scan import scan
from mmseg_heads.data.spec import load_data_spec


def copy_demo(demo_spec: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(demo_spec.parent, data)
    return data / demo_spec.name


def test_three_planted_problems_are_reported_together(tmp_path, demo_spec, capsys):
    spec = copy_demo(demo_spec, tmp_path)
    data = spec.parent
    # 1. an unmapped label value: a palette index 7 in a 4-class task
    shapes = np.array(Image.open(data / "labels/shapes/img0003.png"))
    shapes[:2, :2] = 7
    label = Image.fromarray(shapes, "P")
    label.putpalette([0] * 768)
    label.save(data / "labels/shapes/img0003.png")
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
