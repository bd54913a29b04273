"""A training step reads nothing back from the device (issue #20).

On a GPU every ``.item()``, ``float(t)``, ``bool(t)`` or ``.tolist()`` of a tensor waits for all
queued kernels. On the CPU there is nothing to wait for, but the same calls can be counted: the
step's functions must make none, in the trainer's own loop; the step log is read every
``train.log_every`` batches instead. (``tests/test_cuda.py`` runs steps under
``torch.cuda.set_sync_debug_mode("error")`` where a GPU is present.)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from mmseg_heads.cli.main import main
from mmseg_heads.engine import step_log, steps, trainer
from mmseg_heads.engine.optim import build_optimizer, optimizer_step

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class ReadCounter:
    """Counts reads of tensor values while ``active`` (patched onto ``torch.Tensor``)."""

    def __init__(self, monkeypatch) -> None:
        self.active = 0
        self.counts: Counter = Counter()
        for name in READS:
            monkeypatch.setattr(
                torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name))
            )

    def _counting(self, name, original):
        def read(tensor, *args, **kwargs):
            if self.active:
                self.counts[name] += 1
            return original(tensor, *args, **kwargs)

        return read

    def watch(self, owner, attribute: str, monkeypatch) -> None:
        """Count the reads made inside ``owner.attribute`` (a function or method)."""
        original = getattr(owner, attribute)

        def watched(*args, **kwargs):
            self.active += 1
            try:
                return original(*args, **kwargs)
            finally:
                self.active -= 1

        monkeypatch.setattr(owner, attribute, watched)


def _config(tmp_path: Path, spec: Path, name: str, **train) -> Path:
    config = {
        "data": str(spec),
        "model": {
            "encoders": {
                "optical": "tu-mobilenetv3_small_050",
                "thermal": "tu-mobilenetv3_small_050",
            },
            "decoder_channels": [16, 16, 8, 8, 8],
            "modality_dropout": 0.3,
        },
        "loss": {"task_weighting": "uncertainty", "shapes": {"ce": 1.0, "dice": 1.0, "focal": 1.0}},
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "crop": 48,
            "workers": 0,
            "precision": "fp32",
            "threads": 1,
            "seed": 5,
            "out": str(tmp_path / name),
        }
        | train,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(run: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def test_the_trainers_steps_read_nothing_back_and_the_log_is_read_per_log_every(
    tmp_path, demo_spec, monkeypatch
):
    """A real run (2 epochs of 4 batches, uncertainty weighting, ce + dice, modality dropout):
    no read inside a step; with ``log_every: 3`` the log is read after batches 3 and 4 of each
    epoch (due, then the epoch's end), and the rows are those of a run reading every batch."""
    every_batch = _config(tmp_path, demo_spec, "every", log_every=1)
    assert main(["train", str(every_batch)]) == 0

    counter = ReadCounter(monkeypatch)
    counter.watch(steps.Stepper, "micro_batch", monkeypatch)
    counter.watch(step_log.EpochLosses, "add", monkeypatch)
    counter.watch(step_log.StepLog, "add", monkeypatch)
    counter.watch(trainer, "batch_foreground_counts", monkeypatch)
    counter.watch(trainer, "to_device", monkeypatch)
    reads = []
    original_read = step_log.StepLog.read

    def read(self):
        rows = original_read(self)
        reads.append([row["step"] for row in rows])
        return rows

    monkeypatch.setattr(step_log.StepLog, "read", read)
    batched = _config(tmp_path, demo_spec, "batched", log_every=3)
    assert main(["train", str(batched)]) == 0

    assert counter.counts == Counter()  # nothing read back inside any step
    assert reads == [[1, 2, 3], [4], [5, 6, 7], [8]]
    assert _rows(tmp_path / "batched", "train_batch") == _rows(tmp_path / "every", "train_batch")
    losses = [
        {k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp_path / "every", "train")
    ]
    again = [
        {k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp_path / "batched", "train")
    ]
    assert losses == again and all(r["loss"] > 0 for r in losses)


def test_counting_catches_a_read(monkeypatch):
    """The counter itself: a step that reads a loss would be caught."""
    counter = ReadCounter(monkeypatch)

    def reads_a_loss():
        return float(torch.tensor(2.0) * 3)

    holder = type("Holder", (), {"step": staticmethod(reads_a_loss)})
    counter.watch(holder, "step", monkeypatch)
    assert holder.step() == 6.0
    assert counter.counts == Counter({"__float__": 1})


def test_a_nonfinite_loss_is_warned_with_its_step_when_the_log_is_read(
    tmp_path, demo_spec, monkeypatch, caplog
):
    """The warning keeps its meaning and its step number although it is read later."""
    original = steps.forward_loss
    calls = []

    def poisoned(model, criterion, batch, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second batch: one task's logits turn NaN
            real_forward = model.forward

            def nan_forward(images):
                out = real_forward(images)
                return {**out, "hotspots": out["hotspots"] * torch.nan}

            model.forward = nan_forward
            try:
                return original(model, criterion, batch, **kwargs)
            finally:
                del model.forward
        return original(model, criterion, batch, **kwargs)

    monkeypatch.setattr(steps, "forward_loss", poisoned)
    config = _config(tmp_path, demo_spec, "nan", log_every=50, epochs=1)
    with caplog.at_level("WARNING", logger="mmseg_heads"):
        assert main(["train", str(config)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # NaN logits times a zero gradient is still NaN: the masked task's backward brings NaN to
    # the shared layers, and the optimizer skips the step on the device instead of taking it.
    assert warned == [
        "step 2: task 'hotspots' has a non-finite loss; left out of this step",
        "step 2: a gradient was not finite; the optimizer step was skipped (weights unchanged)",
    ]
    rows = _rows(tmp_path / "nan", "train_batch")
    assert [r.get("nonfinite") for r in rows] == [None, ["hotspots"], None, None]
    assert [r.get("skipped_step", False) for r in rows] == [False, True, False, False]
    epoch = _rows(tmp_path / "nan", "train")[0]
    assert all(v == v for v in epoch.values() if isinstance(v, float))  # no NaN in the means


@pytest.mark.parametrize("device_type, expected", [("cpu", 1), ("cuda", 50)])
def test_log_every_defaults_by_device(device_type, expected):
    assert step_log.log_every(None, torch.device(device_type)) == expected
    assert step_log.log_every(7, torch.device(device_type)) == 7


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_a_step_with_a_nonfinite_gradient_is_skipped_on_the_device(name):
    """Weights and optimizer state stay as they were; the next finite step is taken."""

    model = torch.nn.Module()
    model.trunk = torch.nn.Module()
    model.trunk.encoders = torch.nn.Linear(2, 2)
    model.head = torch.nn.Linear(2, 1)
    cfg = {"optimizer": name, "lr": 0.1, "weight_decay": 0.01, "encoder_lr_mult": 1.0}
    optimizer = build_optimizer(model, None, cfg)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert optimizer_step(optimizer).item() == 0.0
    before = [p.detach().clone() for p in model.parameters()]
    state = [v.clone() for s in optimizer.state.values() for v in s.values()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model.head.weight.grad[0, 0] = torch.nan
    assert optimizer_step(optimizer).item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    after = [v for s in optimizer.state.values() for v in s.values()]
    assert len(after) == len(state) > 0
    assert all(torch.equal(a, b) for a, b in zip(state, after, strict=True))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert optimizer_step(optimizer).item() == 0.0
    assert not torch.equal(before[0], next(model.parameters()))
