"""Training engine: exact resume after SIGKILL, atomic checkpoints, freezing, seeds, schedules."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Subset

from mmseg_heads.cli.main import main
from mmseg_heads.config import load_config
from mmseg_heads.data.dataset import collate
from mmseg_heads.engine import checkpoint as ckpt
from mmseg_heads.engine.loaders import train_dataset, train_loader
from mmseg_heads.engine.schedule import lr_factor
from mmseg_heads.engine.trainer import Trainer
from mmseg_heads.errors import UserError

#: 0.3 M parameters: a training test writes checkpoints of a few MB, not hundreds.
TINY_ENCODER = "tu-mobilenetv3_small_050"


def write_config(tmp_path: Path, spec: Path, name: str = "config", **train) -> Path:
    config = {
        "data": str(spec),
        "model": {
            "encoders": {"optical": TINY_ENCODER, "thermal": TINY_ENCODER},
            "decoder_channels": [16, 16, 8, 8, 8],
            "modality_dropout": 0.3,  # draws from the RNG every step: resume must restore it
        },
        "loss": {"task_weighting": "uncertainty"},
        "train": {
            "epochs": 4,
            "batch_size": 4,
            "crop": 48,
            "workers": 0,
            "precision": "fp32",
            "seed": 3,
        }
        | {"out": str(tmp_path / name)}
        | train,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pause_at_epoch(process: subprocess.Popen, last: Path, epoch: int) -> None:
    """Leave ``process`` stopped (SIGSTOP) once ``last`` holds ``epoch`` or a later one.

    An epoch of the tiny test model takes a fraction of a second: the run goes on in 10 ms
    slices and its checkpoint is read only while it is stopped, so it cannot finish the
    following epochs unseen.
    """
    deadline = time.time() + 300
    while time.time() < deadline:
        os.kill(process.pid, signal.SIGSTOP)
        if last.is_file() and _epoch_of(last) >= epoch:
            return
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"{last} never reached epoch {epoch}")


def _epoch_of(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except Exception:  # being replaced right now
        return 0


def test_resume_after_sigkill_reproduces_the_uninterrupted_run_exactly(tmp_path, demo_spec):
    # with augmentation and foreground crops: their draws must come back exactly too
    augmented = {"augment": "medical", "crop_foreground": 0.5, "resize": [56, 72]}
    straight = write_config(tmp_path, demo_spec, "straight", **augmented)
    killed = write_config(tmp_path, demo_spec, "killed", **augmented)
    command = [sys.executable, "-m", "mmseg_heads", "train"]
    subprocess.run([*command, str(straight)], check=True, capture_output=True)

    process = subprocess.Popen(
        [*command, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    pause_at_epoch(process, last, 2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 2 <= _epoch_of(last) < 4, "the run must be killed part-way"

    resumed = subprocess.run(
        [*command, str(killed), "--resume", "auto"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)

    # metrics.jsonl holds each epoch once, as if never interrupted (timings aside).
    def records(run: str) -> list[dict]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert records("killed") == records("straight")


def test_resume_without_a_run_is_a_user_error(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec))
    from mmseg_heads.engine.trainer import train

    with pytest.raises(UserError, match="nothing to resume"):
        train(config, resume="auto", progress=False)


def test_failure_in_the_middle_of_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_one_epochs_names_share_one_file_and_a_later_save_leaves_them(tmp_path):
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    ckpt.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, best, last)
    assert best.stat().st_ino == last.stat().st_ino  # a hard link: the state's space is paid once
    ckpt.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, last)
    assert ckpt.load_checkpoint(best)["epoch"] == 1 and torch.equal(
        ckpt.load_checkpoint(best)["w"], torch.ones(3)
    )
    assert ckpt.load_checkpoint(last)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_disk_without_hard_links_gets_copies(tmp_path, monkeypatch):
    import errno

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("mmseg_heads.atomic.os.link", no_links)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    ckpt.save_checkpoint({"epoch": 3, "w": torch.ones(2)}, best, last)
    assert best.stat().st_ino != last.stat().st_ino
    assert best.read_bytes() == last.read_bytes()
    assert ckpt.load_checkpoint(last)["epoch"] == 3


def test_freezing_keeps_encoder_weights_and_batchnorm_statistics(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=2, freeze_encoders_epochs=1))
    trainer = Trainer(config, progress=False)
    encoders = trainer.model.trunk.encoders
    before = {k: v.clone() for k, v in encoders.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in trainer.model.decoder.state_dict().items()}
    trainer.epoch = 1
    trainer.train_epoch()
    after = encoders.state_dict()
    assert any("running_mean" in k for k in before)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # weights AND BatchNorm running stats
    assert any(
        not torch.equal(v, trainer.model.decoder.state_dict()[k]) for k, v in decoder_before.items()
    )
    trainer.epoch = 2
    trainer.train_epoch()
    changed = [k for k, v in before.items() if not torch.equal(v, encoders.state_dict()[k])]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)


def test_workers_and_epochs_draw_different_augmentations(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, workers=2, crop=32))
    dataset = train_dataset(config.spec, config.train)

    def crops(epoch: int) -> list[torch.Tensor]:
        return [b["images"]["thermal"] for b in train_loader(dataset, config.train, 1, epoch)]

    epoch1, epoch1_again, epoch2 = crops(1), crops(1), crops(2)
    assert all(torch.equal(a, b) for a, b in zip(epoch1, epoch1_again, strict=True))  # reproducible
    assert not all(torch.equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))
    # One sample served four times: worker 0 makes batches 0 and 2, worker 1 batches 1 and 3.
    # Workers seeded alike would crop it alike in batches 0 and 1.
    same_sample = Subset(dataset, [0, 0, 0, 0])
    loader = DataLoader(same_sample, batch_size=1, num_workers=2, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    views = [b["images"]["thermal"] for b in loader]
    assert not torch.equal(views[0], views[1])


def test_lr_schedules():
    assert lr_factor(0, total=100, warmup=10) == pytest.approx(0.1)
    assert lr_factor(9, total=100, warmup=10) == pytest.approx(1.0)
    assert lr_factor(10, total=100, warmup=10, schedule="cosine") == pytest.approx(1.0)
    assert lr_factor(55, total=100, warmup=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(100, total=100, schedule="cosine") == pytest.approx(0.0)
    assert lr_factor(50, total=100, schedule="poly", power=1.0) == pytest.approx(0.5)
    assert lr_factor(25, total=100, schedule="step", step_size=10) == pytest.approx(0.01)
    assert lr_factor(77, total=100, schedule="constant") == 1.0


def test_encoder_lr_multiplier_and_accumulation(tmp_path, demo_spec):
    config = load_config(
        write_config(tmp_path, demo_spec, lr=0.01, encoder_lr_mult=0.1, accumulate=2, epochs=1)
    )
    trainer = Trainer(config, progress=False)
    rest, encoders = trainer.optimizer.param_groups
    assert rest["lr"] == pytest.approx(0.01) and encoders["lr"] == pytest.approx(0.001)
    encoder_ids = {id(p) for p in trainer.model.trunk.encoders.parameters()}
    assert {id(p) for p in encoders["params"]} == encoder_ids
    trainer.epoch = 1
    trainer.train_epoch()
    assert trainer.step == 2  # 16 samples / batch 4 = 4 batches, 2 per optimizer step


def test_ctrl_c_leaves_a_resumable_run_and_says_how_to_continue(tmp_path, demo_spec):
    config = write_config(tmp_path, demo_spec, "interrupted", epochs=6)
    command = [sys.executable, "-m", "mmseg_heads", "train", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "interrupted" / "checkpoints" / "last.pt"
    pause_at_epoch(process, last, 1)
    process.send_signal(signal.SIGINT)  # delivered when it goes on
    os.kill(process.pid, signal.SIGCONT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    epoch = _epoch_of(last)
    assert 1 <= epoch < 6
    resumed = subprocess.run(
        [*command, "--resume", "auto", "train.epochs=6"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _epoch_of(last) == 6


def test_resuming_a_finished_run_says_there_is_nothing_left_to_train(tmp_path, demo_spec, caplog):
    import logging

    from mmseg_heads.engine.trainer import train

    config = load_config(write_config(tmp_path, demo_spec, epochs=1))
    run_dir = train(config, progress=False)
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        assert train(config, resume="auto", progress=False) == run_dir
    assert (
        "nothing left to train" in caplog.text
        and "epoch 1 (step 4) of train.epochs 1" in caplog.text
    )
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_the_epoch_line_says_time_learning_rate_and_best(tmp_path, demo_spec, caplog):
    import logging
    import re

    from mmseg_heads.engine.trainer import train

    config = load_config(write_config(tmp_path, demo_spec, epochs=2))
    with caplog.at_level(logging.INFO, logger="mmseg_heads"):
        train(config, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2
    pattern = (
        r"^epoch 1/2: loss [0-9.]+; shapes F [0-9.]+, hotspots F [0-9.]+; lr [0-9.e-]+; [0-9.]+ s"
    )
    assert re.match(pattern, lines[0]), lines[0]
    assert lines[0].endswith("(best so far)")  # the first epoch always improves on nothing


def test_a_step_budget_trains_exactly_that_many_steps(tmp_path, demo_spec, caplog):
    """16 demo images at batch 4: 4 steps an epoch; 10 steps = 2 epochs + 2 steps of a third,
    the cosine schedule ends at the 10th; per-step rows reach metrics.jsonl."""
    config = write_config(tmp_path, demo_spec, "budget", steps=10)
    raw = yaml.safe_load(config.read_text())
    del raw["train"]["epochs"]
    config.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.INFO, logger="mmseg_heads"):
        assert main(["train", str(config)]) == 0
    state = torch.load(tmp_path / "budget/checkpoints/last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (3, 10)
    rows = [
        json.loads(line) for line in (tmp_path / "budget/metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in rows if r.get("split") == "train_batch"]
    assert [r["step"] for r in steps] == list(range(1, 11))
    assert [r["epoch"] for r in rows if r.get("split") == "train"] == [1, 2, 3]
    last_lr = [r["lr"] for r in rows if r.get("split") == "train"][-1]
    assert last_lr == pytest.approx(0.0, abs=1e-9)  # cosine over exactly the 10 steps
    assert "epoch 3/3" in caplog.text


def test_steps_and_epochs_together_are_refused(tmp_path, demo_spec, capsys):
    config = write_config(tmp_path, demo_spec, "both", epochs=2, steps=10)
    assert main(["train", str(config)]) == 2
    assert "train.steps: give train.steps or train.epochs, not both" in capsys.readouterr().err


def _step_budget_config(tmp_path: Path, spec: Path, name: str, **train) -> Path:
    """A ``train.steps`` config (no ``epochs``) on one thread (runs compared bit for bit)."""
    config = write_config(tmp_path, spec, name, threads=1, **train)
    raw = yaml.safe_load(config.read_text())
    del raw["train"]["epochs"]
    config.write_text(yaml.safe_dump(raw))
    return config


def _rows(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_timeline_counts_validation_and_numbered_checkpoints_in_epochs_or_steps():
    from mmseg_heads.engine.run_dir import numbered_checkpoints
    from mmseg_heads.engine.timeline import Intervals, plan_steps, steps_in_epoch

    assert plan_steps(lambda epoch: 4, epochs=3, budget=None) == [4, 4, 4]
    assert plan_steps(lambda epoch: 4, epochs=40, budget=7) == [4, 3]
    assert steps_in_epoch(16, 4, 1) == 4 and steps_in_epoch(18, 4, 3) == 2  # 4 batches / 3
    per_epoch = Intervals.from_train({"val_every": None, "checkpoint_every": 2, "steps": None})
    assert [per_epoch.validates(s) for s in (3, 4)] == [False, False]  # never between steps
    assert per_epoch.validates(4, epoch_end=True)
    assert per_epoch.numbered(2, 8) is None  # epochs: only at an epoch's end
    assert per_epoch.checkpoint_names(2, 8, improved=True, epoch_end=True) == [
        "epoch_2.pt", "best.pt", "last.pt"]  # fmt: skip
    assert per_epoch.checkpoint_names(3, 12, improved=False, epoch_end=True) == ["last.pt"]
    by_step = Intervals.from_train({"val_every": 3, "checkpoint_every": 2, "steps": 7})
    assert [s for s in range(1, 8) if by_step.validates(s)] == [3, 6]
    assert by_step.validates(7, epoch_end=True, final=True)  # the end of the run, always
    assert not by_step.validates(4, epoch_end=True)  # an epoch's end is no reason of its own
    assert [by_step.numbered(1, s) for s in (2, 3)] == ["step_2.pt", None]
    assert by_step.checkpoint_names(2, 6, improved=True, epoch_end=False) == [
        "step_6.pt", "best.pt", "last.pt"]  # fmt: skip  (a save inside an epoch: resumable)
    assert by_step.checkpoint_names(2, 5, improved=False, epoch_end=False) == []
    # with epochs, val_every counts steps too
    mixed = Intervals.from_train({"val_every": 5, "checkpoint_every": 0, "steps": None})
    assert mixed.validates(10) and not mixed.validates(12, epoch_end=True)
    # the free-space check and inspect: numbered files still to come, in the budget's unit
    steps = {"checkpoint_every": 2, "keep_checkpoints": None, "steps": 7, "epochs": 40}
    assert numbered_checkpoints(steps) == 3  # step_2, step_4, step_6
    assert numbered_checkpoints(steps, done=4) == 1  # resumed after step 4: step_6 only
    assert numbered_checkpoints(steps | {"keep_checkpoints": 2}) == 2
    epochs = {"checkpoint_every": 5, "keep_checkpoints": None, "steps": None, "epochs": 12}
    assert numbered_checkpoints(epochs) == 2 and numbered_checkpoints(epochs, done=5) == 1


def test_val_every_and_checkpoint_every_count_optimizer_steps(tmp_path, demo_spec, caplog, capsys):
    """4 steps an epoch; steps 7, val_every 3: validation at steps 3 and 6 (inside epochs) and
    7 (the end); checkpoint_every 2 with keep_checkpoints 2 keeps step_4.pt and step_6.pt; best.pt
    is the best validation's state; a step snapshot evaluates like the validation of its step."""
    config = _step_budget_config(
        tmp_path, demo_spec, "by_step", steps=7, val_every=3, checkpoint_every=2, keep_checkpoints=2
    )
    with caplog.at_level(logging.INFO, logger="mmseg_heads"):
        assert main(["train", str(config)]) == 0
    run_dir = tmp_path / "by_step"
    val = _rows(run_dir, "val")
    assert [(r["epoch"], r["step"]) for r in val] == [(1, 3), (2, 6), (2, 7)]
    assert [(r["epoch"], r["step"]) for r in _rows(run_dir, "train")] == [(1, 4), (2, 7)]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    order = [(r["split"], r["step"]) for r in map(json.loads, lines)]
    assert order.index(("val", 3)) == order.index(("train_batch", 3)) + 1  # as it happened
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.pt", "last.pt", "step_4.pt", "step_6.pt"]  # fmt: skip
    states = {p.stem: torch.load(p, weights_only=True) for p in folder.iterdir()}
    assert (states["step_4"]["epoch"], states["step_4"]["step"]) == (1, 4)
    assert (states["step_6"]["epoch"], states["step_6"]["step"]) == (2, 6)
    assert (states["last"]["epoch"], states["last"]["step"]) == (2, 7)
    top = max(r["score"] for r in val)
    best_row = next(r for r in val if r["score"] == top)  # the first to reach it
    assert states["best"]["step"] == best_row["step"] and states["best"]["best"] == top
    assert states["best"]["val"] == {
        t: v["macro_foreground_f"] for t, v in best_row["tasks"].items()
    }
    assert states["last"]["best"] == top
    assert "step 3 (epoch 1): shapes F" in caplog.text
    epoch_1 = next(line for line in caplog.text.splitlines() if "epoch 1/2:" in line)
    assert "at step 3;" in epoch_1

    # a snapshot is evaluated as any checkpoint: by its path, or by its name in the run
    assert main(["evaluate", str(run_dir), "--checkpoint", "step_6"]) == 0
    (out,) = run_dir.glob("report_*_val_step_6")
    report = json.loads((out / "report.json").read_text())
    assert report["epoch"] == 2
    assert report["checkpoint"] == str(folder / "step_6.pt")
    for task, scores in val[1]["tasks"].items():
        assert report["tasks"][task]["macro_foreground_f"] == pytest.approx(
            scores["macro_foreground_f"], abs=1e-6
        )
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--checkpoint", "step_2"]) == 2  # pruned
    assert "it keeps step_4, step_6 besides best and last" in capsys.readouterr().err


@pytest.mark.parametrize(
    "augment",
    [{}, {"augment": "medical", "crop_foreground": 0.5, "augment_on": "gpu"}],
    ids=["plain", "augment_on_gpu"],
)
def test_a_stopped_step_budget_resumes_validating_on_the_same_steps(
    tmp_path, demo_spec, caplog, monkeypatch, augment
):
    """Stopped before step 7 (after step 6's validation and step_6.pt, in epoch 2): last.pt
    holds step 6 (the save inside the epoch), and the run resumes at epoch 2's third batch and
    ends as the run that was never stopped: the same metrics.jsonl (validation at 3, 6 and 7,
    once each; epoch 2's loss means over all its batches) and the same weights. With
    ``augment_on: gpu`` the batches' draws (seeded by epoch and batch) come back too."""
    from mmseg_heads.engine.steps import Stepper
    from mmseg_heads.engine.trainer import train

    settings = {"steps": 7, "val_every": 3, "checkpoint_every": 2, "keep_checkpoints": 2}
    settings |= augment
    before = torch.get_num_threads()
    try:
        straight = train(
            load_config(_step_budget_config(tmp_path, demo_spec, "straight", **settings)),
            progress=False,
        )
        stopped = load_config(_step_budget_config(tmp_path, demo_spec, "stopped", **settings))
        micro_batch = Stepper.micro_batch

        def stop_before_step_7(self, batch, boundary):
            if self.step == 6:
                raise KeyboardInterrupt
            return micro_batch(self, batch, boundary)

        monkeypatch.setattr(Stepper, "micro_batch", stop_before_step_7)
        with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
            with pytest.raises(KeyboardInterrupt):
                train(stopped, progress=False)
        assert "holds step 6 (epoch 2, after its batch 2); continue with" in caplog.text
        run_dir = tmp_path / "stopped"
        assert [r["step"] for r in _rows(run_dir, "val")] == [3, 6]
        last = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
        assert (last["epoch"], last["step"], last["epoch_batches"]) == (2, 6, 2)
        monkeypatch.undo()
        assert train(stopped, resume="auto", progress=False) == run_dir
    finally:
        torch.set_num_threads(before)

    def records(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]

    assert [r["step"] for r in _rows(run_dir, "val")] == [3, 6, 7]
    assert records(run_dir) == records(straight)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step_4.pt", "step_6.pt"]
    for name in ("last.pt", "step_6.pt", "best.pt"):
        a = torch.load(straight / "checkpoints" / name, weights_only=True)
        b = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name


def test_metrics_log_flushes_every_few_seconds_and_at_the_end(tmp_path):
    from mmseg_heads.engine.run_dir import MetricsLog

    now = [0.0]
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, every=5.0, clock=lambda: now[0])
    log.add({"step": 1})
    assert not path.exists()  # buffered
    now[0] = 5.0
    log.add({"step": 2})
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    log.add({"step": 3})
    log.flush()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_keep_checkpoints_keeps_the_newest_numbered_files_and_best_and_last(tmp_path, demo_spec):
    config = write_config(tmp_path, demo_spec, "keep", checkpoint_every=1, keep_checkpoints=2)
    assert main(["train", str(config)]) == 0
    folder = tmp_path / "keep" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert [n for n in names if n.startswith(("epoch_", "step_"))] == ["epoch_3.pt", "epoch_4.pt"]
    # with epochs, validation once an epoch as before; its line says the step it came after
    val = _rows(tmp_path / "keep", "val")
    assert [(r["epoch"], r["step"]) for r in val] == [(1, 4), (2, 8), (3, 12), (4, 16)]
    assert {"best.pt", "last.pt"} <= set(names)
    best = torch.load(folder / "best.pt", weights_only=True)  # its data survived the pruning
    assert 1 <= best["epoch"] <= 4


def test_prune_checkpoints_leaves_other_files_alone(tmp_path):
    from mmseg_heads.engine.run_dir import prune_checkpoints

    for name in ("epoch_2.pt", "epoch_10.pt", "epoch_9.pt", "best.pt", "last.pt", "epoch_x.pt"):
        (tmp_path / name).write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, 1)
    assert sorted(p.name for p in removed) == ["epoch_2.pt", "epoch_9.pt"]  # 10 is newest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "epoch_10.pt", "epoch_x.pt", "last.pt"]  # fmt: skip
    assert prune_checkpoints(tmp_path, None) == []
    for name in ("step_20.pt", "step_100.pt", "step_40.pt"):  # a train.steps budget's files
        (tmp_path / name).write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, 2, kind="step")
    assert [p.name for p in removed] == ["step_20.pt"]  # by number, not by name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "epoch_10.pt", "epoch_x.pt", "last.pt", "step_100.pt", "step_40.pt"]  # fmt: skip


def test_the_epoch_line_says_the_time_left_and_a_log_file_gets_progress_lines(
    tmp_path, demo_spec, caplog, monkeypatch
):
    from mmseg_heads.engine import progress as progress_module
    from mmseg_heads.engine.trainer import remaining_text

    assert remaining_text([10.0, 30.0, 20.0], 3) == "; about 60 s left"
    assert remaining_text([100.0], 30) == "; about 50 min left"
    assert remaining_text([3600.0], 3) == "; about 3.0 h left"
    assert remaining_text([5.0], 0) == ""
    monkeypatch.setattr(progress_module, "PROGRESS_LINE_SECONDS", 0.0)
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    config = write_config(tmp_path, demo_spec, "eta", epochs=2)
    with caplog.at_level(logging.INFO, logger="mmseg_heads"):
        assert main(["train", str(config)]) == 0
    assert "epoch 1: batch 1/4" in caplog.text and "epoch 2: batch 4/4" in caplog.text
    first = next(line for line in caplog.text.splitlines() if "epoch 1/2:" in line)
    assert " s left" in first
    last = next(line for line in caplog.text.splitlines() if "epoch 2/2:" in line)
    assert "left" not in last
