"""The console script end to end: exit codes, messages, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmseg_heads.cli.main import main
from mmseg_heads.data.dataset import MultiModalDataset
from mmseg_heads.data.spec import load_data_spec

#: 0.3 M parameters: a training test writes checkpoints of a few MB, not hundreds.
TINY_ENCODER = "tu-mobilenetv3_small_050"

TINY_TRAIN = {"epochs": 1, "batch_size": 4, "crop": 64, "workers": 0, "seed": 0}


def write_config(tmp_path: Path, spec: Path, **sections) -> Path:
    config = {
        "data": str(spec),
        "model": {
            "encoders": {"optical": TINY_ENCODER, "thermal": TINY_ENCODER},
            "decoder_channels": [32, 16, 16, 8, 8],
        },
        "train": TINY_TRAIN | {"out": str(tmp_path / "run")},
    }
    for key, value in sections.items():
        config[key] = value if not isinstance(value, dict) else config.get(key, {}) | value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_then_evaluate_writes_run_dir_and_reports(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec)
    code, out, err = run_cli(capsys, "train", config)
    assert code == 0, err
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "data_spec.yaml",
        "checkpoints",
        "metrics.jsonl",
    }
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    batches = [r for r in records if r["split"] == "train_batch"]
    epochs = [r for r in records if r["split"] != "train_batch"]
    assert [r["split"] for r in epochs] == ["train", "val"]
    assert {"loss", "shapes", "hotspots", "shapes/ce", "shapes/dice", "hotspots/ce"} <= set(
        epochs[0]
    )
    # Per-batch TP/FP/FN: TP + FN over an epoch is every foreground pixel of the training split
    # (crops are the full 64×64 images here, flips keep counts).
    assert [r["step"] for r in batches] == [1, 2, 3, 4]
    dataset = MultiModalDataset(load_data_spec(demo_spec), "train")
    hot_pixels = sum(
        int((dataset[i]["labels"]["hotspots"] == 1).sum()) for i in range(len(dataset))
    )
    assert (
        sum(r["tasks"]["hotspots"]["tp"] + r["tasks"]["hotspots"]["fn"] for r in batches)
        == hot_pixels
    )

    code, out, err = run_cli(capsys, "evaluate", run, "--out", tmp_path / "report")
    assert code == 0, err
    assert "\r" not in err  # not a terminal: no progress bar redrawn into the log
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["schema_version"] == 1 and report["split"] == "val"
    assert set(report["tasks"]) == {"shapes", "hotspots"}
    shapes = report["tasks"]["shapes"]
    assert shapes["classes"] == ["background", "circle", "square", "triangle"]
    assert list(shapes["per_class"]) == shapes["classes"]
    matrix = shapes["confusion_matrix"]
    assert sum(map(sum, matrix)) == 8 * 64 * 64  # every val pixel, once
    for name, row in zip(shapes["classes"], matrix, strict=True):
        assert shapes["per_class"][name]["support"] == sum(row)
    assert "## shapes" in (tmp_path / "report" / "report.md").read_text()

    # --checkpoint last: that checkpoint, into a folder of its own by default
    code, out, err = run_cli(capsys, "evaluate", run, "--checkpoint", "last")
    assert code == 0, err
    last = json.loads((run / "report_demo_val_last" / "report.json").read_text())
    assert last["checkpoint"].endswith("last.pt")
    # inference flags: a folder of their own, the plain report beside it untouched
    before = (run / "report_demo_val_last" / "report.json").read_bytes()
    code, out, err = run_cli(
        capsys, "evaluate", run, "--checkpoint", "last", "--tta", "hflip", "--window", "32"
    )
    assert code == 0, err
    flipped = json.loads(
        (run / "report_demo_val_last_tta-hflip_window32" / "report.json").read_text()
    )
    assert flipped["inference"]["tta"] == ["hflip"] and flipped["inference"]["window"] == 32
    assert (run / "report_demo_val_last" / "report.json").read_bytes() == before
    code, out, err = run_cli(
        capsys, "evaluate", run / "checkpoints/last.pt", "--checkpoint", "best"
    )
    assert code == 2 and "--checkpoint: --checkpoint best picks a checkpoint of a run" in err


def test_evaluate_on_another_spec_with_the_same_tasks(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec)
    assert run_cli(capsys, "train", config)[0] == 0
    other = tmp_path / "external.yaml"
    spec = yaml.safe_load(demo_spec.read_text())
    spec["root"] = str(demo_spec.parent)
    spec["splits"] = {"test": {"pattern": "img000[0-3]"}}
    other.write_text(yaml.safe_dump(spec))
    code, out, err = run_cli(
        capsys, "evaluate", tmp_path / "run", "--data", other, "--split", "test"
    )
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report_external_test" / "report.json").read_text())
    assert report["samples"] == 4 and report["split"] == "test"

    spec["tasks"]["shapes"]["classes"] = ["background", "circle", "square", "star"]
    other.write_text(yaml.safe_dump(spec))
    code, out, err = run_cli(
        capsys, "evaluate", tmp_path / "run", "--data", other, "--split", "test"
    )
    assert code == 2 and "external.yaml: tasks:" in err and "differ from the checkpoint" in err


def test_misspelled_spec_key_exits_2_naming_file_and_key(tmp_path, demo_spec, capsys):
    spec = tmp_path / "bad_spec.yaml"
    spec.write_text(
        demo_spec.read_text().replace("modalities:", "modalites:") + f"root: {demo_spec.parent}\n"
    )
    config = write_config(tmp_path, spec)
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2
    assert f"{spec}: modalites: unknown key; did you mean 'modalities'?" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_misspelled_config_key_exits_2_naming_file_and_dotted_key(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec, train={"epochz": 3})
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2 and f"{config}: train.epochz: unknown key; did you mean 'epochs'?" in err


def test_every_config_problem_is_reported_at_once(tmp_path, demo_spec, capsys):
    config = write_config(
        tmp_path, demo_spec, train={"epochs": "ten", "lr": -1.0}, model={"fusion": "concatt"}
    )
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2
    assert "3 problems" in err
    assert "train.epochs: expected int" in err and "train.lr: -1.0 is below the minimum" in err
    assert "model.fusion: 'concatt' is not one of" in err and "did you mean 'concat'" in err


def test_cross_references_name_the_spec(tmp_path, demo_spec, capsys):
    config = write_config(
        tmp_path,
        demo_spec,
        model={"heads": {"hotspots": {"source": "thermal2", "decoder": "own"}}},
        loss={"shapes": {"ce": {"class_weights": [1.0, 2.0]}}},
    )
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2
    assert "model.heads.hotspots.source: 'thermal2' is not a modality with its own encoder" in err
    assert "loss.shapes.ce.class_weights: needs 4 values, one per class, got 2" in err


def test_override_on_the_command_line_is_validated(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec)
    code, out, err = run_cli(capsys, "train", config, "train.batchsize=4")
    assert code == 2 and "train.batchsize: unknown key; did you mean 'batch_size'?" in err


def test_existing_run_is_never_overwritten(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec)
    assert run_cli(capsys, "train", config)[0] == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2 and "already holds a run" in err and "train.out" in err
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before


def test_missing_files_and_bad_checkpoints_exit_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: file not found" in err
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    code, out, err = run_cli(capsys, "evaluate", fake)
    assert code == 2 and "fake.pt: not a readable checkpoint" in err
    assert fake.read_bytes() == b"not a checkpoint"


def test_inspect_config_prints_the_seed_level_table(tmp_path, demo_spec, capsys):
    config = write_config(
        tmp_path,
        demo_spec,
        model={
            "encoders": {"optical": "vgg16", "thermal": "resnet50"},
            "decoder_channels": [16] * 5,
        },
    )
    code, out, err = run_cli(capsys, "inspect", config, "--size", "512")
    assert code == 0, err
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.strip()[:1].isdigit() and "@" in line
    }
    assert rows["1"] == ["64@512×512", "—", "64@512×512"]
    assert rows["2"] == ["128@256×256", "64@256×256", "128@256×256"]
    assert rows["16"] == ["512@32×32", "1024@32×32", "1024@32×32"]
    assert rows["32"] == ["512@16×16", "2048@16×16", "2048@16×16"]
    assert "train        16 samples" in out and "val          8 samples" in out
    # batch-size guidance: measured activations per sample, and what a batch of 8 needs in all
    guidance = out[out.index("batch size (train.batch_size") :]
    per_sample = float(guidance.split("activations per sample")[1].split("MiB")[0])
    assert 0.5 < per_sample < 100  # 64² crops of two encoders: a few MiB per sample
    assert "batch 8    needs about" in guidance and "train.batch_size: auto" in guidance


def test_console_script_and_module_entry_point_report_usage_errors(tmp_path):
    for command in (["mmseg-heads"], [sys.executable, "-m", "mmseg_heads"]):
        result = subprocess.run([*command, "train"], capture_output=True, text=True)
        assert result.returncode == 2 and "usage:" in result.stderr
    result = subprocess.run(
        ["mmseg-heads", "inspect", str(tmp_path / "missing.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.yaml'}: file not found"


@pytest.mark.slow
def test_demo_reaches_f1_080_on_every_task(tmp_path):
    """The README's third command: the report's numbers, not a log line."""
    result = subprocess.run(
        ["mmseg-heads", "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "demo/run/report_demo_val/report.json").read_text())
    for task in ("shapes", "hotspots"):
        assert report["tasks"][task]["macro_foreground_f"] >= 0.80, (
            task,
            report["tasks"][task]["per_class"],
        )
        for name, entry in report["tasks"][task]["per_class"].items():
            assert entry["f"] is not None and entry["f"] >= 0.70, (task, name, entry)
    # Job 3: each task loses most without the modality it was annotated on (the demo's design).
    ablation = report["ablation"]
    assert ablation["optical"]["shapes"]["delta"] < ablation["thermal"]["shapes"]["delta"] - 0.5
    assert ablation["thermal"]["hotspots"]["delta"] < ablation["optical"]["hotspots"]["delta"] - 0.5
    assert (tmp_path / "demo/run/report_demo_val/report.html").stat().st_size > 50_000


def test_unknown_encoder_is_caught_before_training_with_a_suggestion(tmp_path, demo_spec, capsys):
    config = write_config(
        tmp_path, demo_spec, model={"encoders": {"optical": "resnet5O", "thermal": "resnet18"}}
    )
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2
    assert "model.encoders.optical: unknown encoder 'resnet5O'; did you mean 'resnet50'" in err


def test_wrong_pretrained_file_exits_2_and_is_left_unchanged(tmp_path, demo_spec, capsys):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"\x00garbage")
    config = write_config(
        tmp_path,
        demo_spec,
        model={
            "encoders": {
                "optical": {"name": "resnet18", "pretrained": str(weights)},
                "thermal": "resnet18",
            }
        },
    )
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2
    assert f"{weights}: model.encoders.optical.pretrained: not a PyTorch weights file" in err
    assert weights.read_bytes() == b"\x00garbage"
    assert not (tmp_path / "run").exists()


def test_imagenet_offline_fails_fast_saying_how_to_pass_a_local_file(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec, model={"pretrained": "imagenet"})
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2
    assert f"model.encoders.optical.pretrained: ImageNet weights for '{TINY_ENCODER}'" in err
    assert "pretrained: path/to/weights.pt" in err
    assert not (tmp_path / "run").exists()


def test_a_task_listed_without_loss_terms_is_a_config_error(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec, loss={"shapes": {}})
    code, out, err = run_cli(capsys, "train", config)
    assert code == 2 and "loss.shapes: give at least one loss term" in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s["modalities"]["thermal"].update(normalize="imagenet"),
            "modalities.thermal.normalize: imagenet statistics are for 3-channel",
        ),
        (
            lambda s: s["modalities"]["optical"].update(normalize={"mean": [0, 0], "std": [1, 1]}),
            "modalities.optical.normalize.mean: needs 1 or 3 values, got 2",
        ),
        (
            lambda s: s.update(
                splits={"train": {"fraction": 0.5, "seed": 1}, "val": {"fraction": 0.5, "seed": 2}}
            ),
            "splits: fraction splits share one shuffle, so they need the same seed",
        ),
    ],
)
def test_spec_consistency_problems_exit_2(tmp_path, demo_spec, capsys, edit, message):
    spec = yaml.safe_load(demo_spec.read_text())
    spec["root"] = str(demo_spec.parent)
    edit(spec)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out, err = run_cli(capsys, "inspect", path)
    assert code == 2 and f"{path}: {message}" in err
