"""CPU threads from the free cores (engine/threads.py): chosen, logged, kept on resume."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from mmseg_heads.cli.main import main
from mmseg_heads.config import load_config
from mmseg_heads.engine import threads as threads_module
from mmseg_heads.engine.threads import choose_threads, free_cores


@pytest.mark.parametrize(
    "cores,idle,expected",
    [(2, 2.0, 2), (2, 1.0, 1), (2, 1.6, 2), (2, 1.4, 1), (2, 0.2, 1), (4, 2.6, 3), (2, None, 2)],
)
def test_free_cores_counts_whole_idle_cores_and_at_least_one(cores, idle, expected):
    assert free_cores(cores, idle) == expected


def test_idle_cores_reads_the_machine():
    idle = threads_module.idle_cores(0.05)
    assert idle is None or 0 <= idle <= (threads_module.os.cpu_count() or 1) + 1e-6


def test_choose_threads_says_why(monkeypatch):
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "idle_cores", lambda: 0.9)  # one core busy elsewhere
    assert choose_threads("auto") == (
        1,
        "auto: 1 of 2 usable cores (1 busy with other work at start); set train.threads to choose",
    )
    assert choose_threads(3) == (3, "train.threads 3 (2 usable cores)")


def test_threads_is_validated(tmp_path, demo_config):
    for value, message in [(0, "below the minimum 1"), ("many", "train.threads")]:
        path = demo_config({"threads": value})
        with pytest.raises(Exception, match=message):
            load_config(path)


def test_training_logs_and_records_its_threads_and_a_resume_keeps_them(
    tmp_path, demo_config, monkeypatch, caplog
):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "idle_cores", lambda: 2.0)
    config = demo_config({"epochs": 1, "workers": 0})
    try:
        with caplog.at_level(logging.INFO, logger="mmseg_heads"):
            assert main(["train", str(config)]) == 0
        assert "threads: 2 (auto: 2 of 2 usable cores; set train.threads to choose)" in caplog.text
        state = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
        assert state["threads"] == 2
        # resumed on a busier machine: the run keeps its 2 threads (exact resume)
        monkeypatch.setattr(threads_module, "idle_cores", lambda: 0.5)
        raw = yaml.safe_load(config.read_text())
        raw["train"]["epochs"] = 2
        config.write_text(yaml.safe_dump(raw))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mmseg_heads"):
            assert (
                main(
                    [
                        "train",
                        str(config),
                        "--resume",
                        str(tmp_path / "run"),
                        "--resume-with-changes",
                    ]
                )
                == 0
            )
        assert "threads: 2, as chosen when this run started" in caplog.text
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_inspect_says_checkpoint_size_and_what_is_kept():
    from torch import nn

    from mmseg_heads.cli.inspect import checkpoint_guidance

    model = nn.Linear(1000, 1000)  # 1,001,000 parameters
    train = {"optimizer": "adamw", "checkpoint_every": 5, "keep_checkpoints": 3, "epochs": 100,
             "steps": None}  # fmt: skip
    size_mb = (4 * 1_001_000 * 3 * 1.05 + (1 << 20)) / (1 << 20)
    text = checkpoint_guidance(model, train)
    assert text.startswith(f"checkpoint: about {size_mb:.0f} MiB per file (weights + adamw state)")
    assert "plus 3 epoch_<N>.pt files kept (one every 5 epochs; about" in text
    # a train.steps budget: checkpoint_every counts steps, and how many files come is known
    steps = checkpoint_guidance(model, train | {"keep_checkpoints": None, "steps": 12})
    assert "plus 2 step_<N>.pt files kept (one every 5 steps, all kept; about" in steps
