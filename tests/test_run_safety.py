"""A run never changes without a word: duplicate YAML keys, reports written over other files,
checkpoints of another model, Ctrl-C while a checkpoint is written (issue 19). Fast unit tests
but the last one (a training subprocess); the CLI cases (exit status 2, the message, no file
touched) are in test_bad_inputs.py."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_engine import write_config

from mmseg_heads.atomic import DeferredInterrupt, interrupts_deferred
from mmseg_heads.cli.main import main
from mmseg_heads.config import apply_overrides, load_config
from mmseg_heads.data.spec import load_data_spec, load_yaml, parse_yaml
from mmseg_heads.engine.checkpoint import TEST_SLOW_SAVE
from mmseg_heads.engine.resume import state_differences
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.report.writers import check_report_folder

SUFFIX = "; keep one of them (a YAML reader would silently take the last)"


def problems_of(excinfo) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


# --- duplicate keys ---------------------------------------------------------------------------------
def test_duplicate_key_in_a_section_names_file_field_and_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d.yaml\ntrain:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_yaml(path)
    assert problems_of(excinfo) == [
        f"{path}: train.epochs: duplicate key: first at line 3, again at line 5{SUFFIX}"
    ]


def test_each_duplicate_at_any_depth_is_one_problem(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "tasks:\n"  # 1
        "  hot:\n"  # 2
        "    labels: a/{id}.png\n"  # 3
        "  hot:\n"  # 4
        "    labels: b/{id}.png\n"  # 5
        "    values: {0: 0, 255: 1, 255: 0}\n"  # 6
        "augment:\n"  # 7
        "  - flip: {p: 0.5, p: 0.2}\n"  # 8
        "tasks:\n"  # 9
        "  x: 1\n"  # 10
    )
    with pytest.raises(ConfigError) as excinfo:
        load_yaml(path)
    assert problems_of(excinfo) == [
        f"{path}: tasks.hot: duplicate key: first at line 2, again at line 4{SUFFIX}",
        f"{path}: tasks.hot.values.255: duplicate key: first at line 6, column 20, again at "
        f"column 28{SUFFIX}",
        f"{path}: augment[0].flip.p: duplicate key: first at line 8, column 12, again at "
        f"column 20{SUFFIX}",
        f"{path}: tasks: duplicate key: first at line 1, again at line 9{SUFFIX}",
    ]
    assert str(excinfo.value).startswith("4 problems:\n")


def test_a_key_three_times_is_two_problems_each_naming_the_first(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 1\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(ConfigError) as excinfo:
        load_yaml(path)
    assert [p.field for p in excinfo.value.problems] == ["train.epochs", "train.epochs"]
    assert [p.message.split(";")[0] for p in excinfo.value.problems] == [
        "duplicate key: first at line 2, again at line 3",
        "duplicate key: first at line 2, again at line 4",
    ]


def test_equal_keys_written_differently_are_duplicates():
    """`1` and `1.0` are one key of the mapping they build: the second would replace the first."""
    with pytest.raises(ConfigError) as excinfo:
        parse_yaml("values:\n  1: 0\n  1.0: 1\n", "s.yaml")
    assert problems_of(excinfo) == [
        f"s.yaml: values.1: duplicate key: first at line 2, again at line 3{SUFFIX}"
    ]


def test_merge_keys_and_anchors_are_not_duplicates():
    """`<<: *base` then a key of base is YAML's override; PyYAML flattens merges into the merged
    node in place, sometimes before that node's own turn (here `inner`, merged by `top`)."""
    text = (
        "base: &b {a: 1, b: 2}\nouter: {inner: &m {<<: *b, a: 3}}\ntop: {<<: *m, c: 4}\nagain: *b\n"
    )
    assert parse_yaml(text, "x.yaml") == {
        "base": {"a": 1, "b": 2},
        "outer": {"inner": {"a": 3, "b": 2}},
        "top": {"a": 3, "b": 2, "c": 4},
        "again": {"a": 1, "b": 2},
    }


def test_same_key_in_different_mappings_and_syntax_errors_are_unchanged(tmp_path):
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\nc: [{x: 1}, {x: 2}]\n", "f") == {
        "a": {"x": 1},
        "b": {"x": 2},
        "c": [{"x": 1}, {"x": 2}],
    }
    path = tmp_path / "broken.yaml"
    path.write_text("a: [1\n")
    with pytest.raises(UserError, match="not valid YAML") as excinfo:
        load_yaml(path)
    assert not isinstance(excinfo.value, ConfigError) and excinfo.value.file == str(path)


def test_overrides_replace_file_values_but_their_own_duplicates_are_refused():
    raw = {"train": {"epochs": 1}}
    assert apply_overrides(raw, ["train.epochs=2", "train.epochs=3"], "c.yaml") == {
        "train": {"epochs": 3}
    }
    assert raw == {"train": {"epochs": 1}}  # a copy: the loaded mapping is unchanged
    with pytest.raises(ConfigError) as excinfo:
        apply_overrides(raw, ["loss.shapes={ce: 1, ce: 2}"], "c.yaml")
    assert problems_of(excinfo) == [
        f"c.yaml: loss.shapes.ce: duplicate key: first at column 2, again at column 9{SUFFIX}"
    ]


def test_a_run_directory_s_stored_config_and_spec_still_load(tmp_path, demo_spec):
    """`train` writes RUN/config.yaml with yaml.safe_dump and copies the spec: both load, and
    the config loads again with overrides of keys it holds."""
    spec_copy = tmp_path / "data_spec.yaml"
    spec_copy.write_text(demo_spec.read_text())
    spec = load_data_spec(spec_copy, data_root=demo_spec.parent)
    assert set(spec.tasks) == {"shapes", "hotspots"}
    stored = tmp_path / "config.yaml"
    stored.write_text(
        yaml.safe_dump(
            {
                "data": str(spec_copy),
                "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}},
                "train": {"epochs": 3, "out": str(tmp_path / "run")},
            },
            sort_keys=False,
        )
    )
    config = load_config(stored, ["train.epochs=5"], data_root=demo_spec.parent)
    assert config.train["epochs"] == 5 and config.spec.root == demo_spec.parent


# --- evaluate --out: only an earlier report of the same run is replaced -----------------------------
def write_our_report(folder: Path, run_dir: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    report = {"schema_version": 1, "run_dir": str(run_dir), "tasks": {}, "split": "val"}
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "report.md").write_text("# Evaluation on split `val`\n\nCheckpoint …\n")
    (folder / "report.html").write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>mmseg_heads report: val</title></head></html>\n"
    )


def test_an_empty_or_new_folder_and_our_report_of_the_run_may_be_written(tmp_path):
    run = tmp_path / "runs/exp"
    check_report_folder(tmp_path / "new", run)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.txt").write_text("other files do not matter\n")
    check_report_folder(tmp_path / "empty", run)
    write_our_report(tmp_path / "ours", run)
    check_report_folder(tmp_path / "ours", run)
    # A relative run directory names the same run.
    write_our_report(tmp_path / "relative", Path("runs/exp"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        check_report_folder(tmp_path / "relative", run)


@pytest.mark.parametrize(
    ("plant", "named", "reason"),
    [
        pytest.param(
            {"report.json": '{"accuracy": 0.9}\n'},
            ["report.json"],
            "which `evaluate` did not write",
            id="user-json",
        ),
        pytest.param(
            {"report.json": "{not json", "report.html": "<html>mine</html>"},
            ["report.json", "report.html"],
            "which `evaluate` did not write",
            id="broken-json-and-own-html",
        ),
        pytest.param(
            {"report.md": "# My report\n"},
            ["report.md"],
            "which `evaluate` did not write",
            id="user-markdown-only",
        ),
    ],
)
def test_files_evaluate_did_not_write_are_refused(tmp_path, plant, named, reason):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in plant.items():
        (out / name).write_text(text)
    with pytest.raises(UserError) as excinfo:
        check_report_folder(out, tmp_path / "run")
    listing = ", ".join(str(out / n) for n in named)
    assert str(excinfo.value) == (
        f"{out}: --out: would overwrite {listing}, {reason}; choose another --out, or move or "
        "remove those files first"
    )
    assert {p.name: p.read_text() for p in out.iterdir()} == plant


def test_a_user_markdown_beside_our_json_is_refused(tmp_path):
    out = tmp_path / "out"
    write_our_report(out, tmp_path / "run")
    (out / "report.md").write_text("my notes\n")
    with pytest.raises(UserError) as excinfo:
        check_report_folder(out, tmp_path / "run")
    assert excinfo.value.field == "--out" and excinfo.value.file == str(out)
    assert excinfo.value.message.startswith(
        f"would overwrite {out / 'report.md'}, which `evaluate` did not write;"
    )


def test_the_report_of_another_run_is_refused(tmp_path):
    out = tmp_path / "out"
    write_our_report(out, tmp_path / "runs/other")
    with pytest.raises(UserError) as excinfo:
        check_report_folder(out, tmp_path / "runs/exp")
    files = ", ".join(str(out / n) for n in ("report.json", "report.md", "report.html"))
    assert str(excinfo.value) == (
        f"{out}: --out: would overwrite {files}, the report of another run "
        f"({tmp_path / 'runs/other'}); choose another --out, or move or remove those files first"
    )


# --- resume into a run of another model -----------------------------------------------------------
def test_state_differences_counts_and_names_the_first_keys():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.zeros(4, 2), "0.bias": torch.zeros(3)}
    state |= {f"extra.{i}": torch.zeros(1) for i in range(7)}
    assert state_differences(model, state) == (
        "2 keys of the model missing from the checkpoint: 1.weight, 1.bias; "
        "7 keys of the checkpoint the model lacks: extra.0, extra.1 and 5 more; "
        "1 keys of another shape: 0.weight (4×2 in the checkpoint, 3×2 in the model)"
    )
    assert state_differences(model, model.state_dict()) == ""
    many = {f"k{i}": torch.zeros(1) for i in range(9)}
    assert state_differences(torch.nn.Module(), many) == (
        "9 keys of the checkpoint the model lacks: k0, k1, k2, k3, k4 and 4 more"
    )


# --- JPEG labels ------------------------------------------------------------------------------------
def test_unmapped_values_of_a_jpeg_label_file_advise_a_lossless_format():
    """Read sample by sample (evaluate, predict --data, train --skip-scan): a JPEG label's
    unmapped values are compression artefacts, which no `values` entry fixes."""
    from mmseg_heads.data.spec import TaskSpec

    task = TaskSpec(name="regions", labels="labels/{id}.jpg", classes=("bg", "near", "far"))
    raw = np.array([[0, 1, 2], [3, 4, 2]])
    for name in ("labels/img0002.jpg", "labels/IMG0002.JPEG"):
        with pytest.raises(UserError) as excinfo:
            task.map_labels(raw, name)
        assert str(excinfo.value) == (
            f"{name}: tasks.regions.values: task 'regions': raw label values [3, 4] have no class "
            "(classes 0..2); the label files are JPEG, whose lossy compression creates "
            "in-between values along class edges: save the labels in a lossless format (PNG), "
            "from the original annotation (mapping these values with `values` would keep wrong "
            "pixels)"
        )
    with pytest.raises(UserError) as excinfo:
        task.map_labels(raw, "labels/img0002.png")
    assert excinfo.value.message.endswith("(classes 0..2); give a `values` map or a `threshold`")


def test_numbers_in_exponent_form_are_floats_in_files_and_overrides(tmp_path):
    from mmseg_heads.data.yaml_io import parse_yaml

    assert parse_yaml("lr: 3e-4\nwd: 1E-5\nsteps: 12\nname: 1e", "x.yaml") == {
        "lr": 3e-4,
        "wd": 1e-5,
        "steps": 12,
        "name": "1e",
    }


# --- Ctrl-C while a checkpoint is written -----------------------------------------------------------
def test_ctrl_c_inside_interrupts_deferred_waits_for_the_block():

    handler = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt) as excinfo:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C is recorded too
            for _ in range(1000):  # the handler runs between bytecodes: give it many
                pass
            with interrupts_deferred():  # nested: the outer block keeps the signal
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
                finished.append("inner")
            finished.append("outer")
    assert finished == ["inner", "outer"] and isinstance(excinfo.value, DeferredInterrupt)
    assert signal.getsignal(signal.SIGINT) is handler
    with interrupts_deferred():  # no Ctrl-C: nothing raised afterwards
        finished.append("quiet")
    # The block's own error wins over a deferred Ctrl-C.
    with pytest.raises(ValueError), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        raise ValueError
    assert signal.getsignal(signal.SIGINT) is handler


def test_interrupts_deferred_is_a_no_op_outside_the_main_thread():

    handler = signal.getsignal(signal.SIGINT)
    seen = []

    def body():
        with interrupts_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [handler]


def writing(folder: Path) -> bool:
    """A checkpoint's temp file has bytes on disk: the test hook pauses torch.save there."""
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > 0:
                return True
    return False


def test_ctrl_c_while_a_checkpoint_is_written_finishes_it_and_says_how_to_continue(
    tmp_path, demo_spec
):
    """Issue 19: SIGINT in the middle of torch.save used to end in `RuntimeError: [enforce fail
    at inline_container.cc:672] . unexpected pos …`, exit 1. The test hook pauses the first
    checkpoint write after its second chunk, so the signal lands inside torch.save's writer."""

    config = write_config(tmp_path, demo_spec, "run", epochs=3)
    folder = tmp_path / "run" / "checkpoints"
    process = subprocess.Popen(
        [sys.executable, "-m", "mmseg_heads", "train", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, TEST_SLOW_SAVE: "3"},
    )
    try:
        deadline = time.time() + 300
        while not writing(folder):
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise AssertionError(process.communicate()[1][-3000:])
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "RuntimeError" not in err, err[-3000:]
    assert "holds epoch 1; continue with `mmseg-heads train" in err and "--resume" in err, err
    for name in ("last.pt", "best.pt"):
        assert torch.load(folder / name, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # no temp files


# --- resume takes the run's own config as the truth (issue 19, item 1) ------------------------


def _trained_run(tmp_path, demo_spec, **train):
    config = write_config(tmp_path, demo_spec, "truth", epochs=1, batch_size=2, **train)
    assert main(["train", str(config)]) == 0
    return config, tmp_path / "truth"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_with_other_settings_is_refused_naming_each_change(tmp_path, demo_spec, capsys):
    config, run_dir = _trained_run(tmp_path, demo_spec)
    before = _tree(run_dir)
    code = main(["train", str(config), "train.lr=0.1", "train.batch_size=4", "--resume", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"run {run_dir} was started with other settings:" in err
    assert (
        "train.batch_size: 2 in the run, 4 now" in err
        and "train.lr: 0.001 in the run, 0.1 now" in err
    )
    assert f"`mmseg-heads train --resume {run_dir}`" in err and "--resume-with-changes" in err
    assert _tree(run_dir) == before  # nothing of the run changed


def test_resume_with_the_run_dir_alone_continues_as_it_started(tmp_path, demo_spec, caplog):
    config, run_dir = _trained_run(tmp_path, demo_spec, checkpoint_every=1)
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        assert main(["train", "--resume", str(run_dir)]) == 0
    assert "nothing left to train" in caplog.text  # 1 epoch of 1: the run's own settings
    assert f"`mmseg-heads train --resume {run_dir} --resume-with-changes train.epochs=…`" in (
        caplog.text
    )


def test_resume_with_changes_applies_them_everywhere(tmp_path, demo_spec, caplog):
    config, run_dir = _trained_run(tmp_path, demo_spec)
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        code = main(
            [
                "train",
                "--resume",
                str(run_dir),
                "--resume-with-changes",
                "train.epochs=2",
                "train.lr=0.01",
                "train.schedule=constant",
            ]  # fmt: skip
        )
    assert code == 0
    assert "resuming with a change: train.lr 0.001 -> 0.01" in caplog.text
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    assert state["config"]["train"]["lr"] == 0.01
    groups = state["optimizer"]["param_groups"]
    assert {g["initial_lr"] for g in groups} == {0.01}  # encoder_lr_mult is 1.0 by default
    assert {g["lr"] for g in groups} == {0.01}  # constant: the new rate itself
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr"] == 0.01
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (resume,) = [r for r in rows if r.get("split") == "resume"]
    assert resume["epoch"] == 1 and resume["changes"]["train.lr"] == {"run": 0.001, "now": 0.01}
    lrs = [r["lr"] for r in rows if r.get("split") == "train"]
    assert lrs[-1] == pytest.approx(0.01)


def test_resume_after_the_data_moved_takes_data_root_and_counts_it_as_no_change(
    tmp_path, capsys, caplog
):
    """The data folder (its spec inside) moved after the run started: `--resume RUN_DIR` alone
    stops with the scan's message; with --data-root the run goes on, reading the new folder,
    without --resume-with-changes and without rewriting the run's config.yaml."""
    from mmseg_heads.data.synthetic import write_demo_dataset

    spec = write_demo_dataset(tmp_path / "data", train=8, val=4, size=64)
    config = write_config(tmp_path, spec, "moving", epochs=1, batch_size=4)
    assert main(["train", str(config)]) == 0
    run_dir = tmp_path / "moving"
    recorded = (run_dir / "config.yaml").read_text()
    (tmp_path / "data").rename(tmp_path / "moved")
    before = _tree(run_dir)
    capsys.readouterr()

    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"no files match 'optical/{{id}}.png' under {tmp_path / 'data'}" in err
    assert _tree(run_dir) == before

    moved = str(tmp_path / "moved")
    with caplog.at_level(logging.INFO, logger="mmseg_heads"):
        assert main(["train", "--resume", str(run_dir), "--data-root", moved]) == 0
    assert "nothing left to train" in caplog.text  # the run's own settings: no change refused
    assert f"data root: {moved} (this run read {tmp_path / 'data'} before)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmseg_heads"):
        code = main(
            ["train", "--resume", str(run_dir), "--data-root", moved, "--resume-with-changes",
             "train.epochs=2"]
        )  # fmt: skip
    assert code == 0
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["data_root"] == moved  # what the next resume reads
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (resume,) = [r for r in rows if r.get("split") == "resume"]
    assert list(resume["changes"]) == ["train.epochs"]  # the data root is no change
    assert (run_dir / "config.yaml").read_text() == recorded.replace("epochs: 1", "epochs: 2")
    assert yaml.safe_load(recorded)["data"] == str(spec.resolve())  # the spec as recorded


def test_resume_with_changes_needs_resume(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec, "x", epochs=1)
    assert main(["train", str(config), "--resume-with-changes"]) == 2
    assert "--resume-with-changes: needs --resume RUN_DIR" in capsys.readouterr().err
