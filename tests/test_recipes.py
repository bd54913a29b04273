"""Every shipped config and data spec is valid, and every config trains on the demo data.

Real-data recipes (MyoPS, BraTS, VOC-style, RGB-D, RGB-T) read modalities the synthetic demo data
does not have, so the demo-data tests skip them; tests/test_real_data.py and
tests/test_example_specs.py cover them instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmseg_heads.cli.demo import DEMO_CONFIG
from mmseg_heads.cli.main import main
from mmseg_heads.config import load_config
from mmseg_heads.data.spec import load_data_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SPECS = sorted((ROOT / "data_specs").glob("*.yaml"))
DEMO_MODALITIES = load_data_spec(ROOT / "data_specs/demo.yaml").describe()["modalities"]


def _skip_unless_demo_modalities(spec_path: Path) -> None:
    """Skip a spec (or a config's spec) whose modalities are not the demo's {optical: 3, thermal: 1}:
    pointing it at the synthetic demo files with --data-root cannot work (no C0/LGE/T2 NIfTI
    volumes, no VOC folders there), so training or inspecting it on them would test nothing."""
    modalities = load_data_spec(spec_path).describe()["modalities"]
    if modalities != DEMO_MODALITIES:
        pytest.skip(f"{spec_path.name} reads {modalities}, not the demo's modalities")


def test_recipes_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "seed_vgg16_resnet50", "fused_single_label", "modality_branches"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_opens_with_the_command_that_runs_it(config):
    head = config.read_text().splitlines()[:6]
    assert any(f"mmseg-heads train configs/{config.name}" in line for line in head)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_one_epoch_on_the_demo_data(config, demo_spec, tmp_path, capsys):
    _skip_unless_demo_modalities(load_config(config).spec.path)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(config),
            "--data-root",
            str(demo_spec.parent),
            "train.epochs=1",
            f"train.out={out}",
            "train.batch_size=8",
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    spec = load_config(config, data_root=demo_spec.parent).spec
    assert set(record["tasks"]) == set(spec.tasks)


def test_demo_config_in_the_package_matches_configs_demo():
    shipped = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    embedded = yaml.safe_load(DEMO_CONFIG.format(config="c.yaml", out="o"))
    for key in ("model", "loss", "eval"):
        assert shipped[key] == embedded[key], key
    assert {k: v for k, v in shipped["train"].items() if k != "out"} == {
        k: v for k, v in embedded["train"].items() if k != "out"
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_data_spec_is_valid_on_the_demo_files(spec, demo_spec, capsys):
    _skip_unless_demo_modalities(spec)
    code = main(["inspect", str(spec), "--data-root", str(demo_spec.parent)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "train        16 samples" in captured.out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_without_its_data(config):
    """Configs and specs are checked without reading files, so real-data recipes validate here."""
    loaded = load_config(config)
    assert set(loaded.model["heads"]) <= set(loaded.spec.tasks)
