"""Atomic writes: a failed write (full disk, no permission) keeps the previous file byte for byte,
leaves no temp file and is a user error naming the file; free space is checked before work."""

from __future__ import annotations

import errno
import io
import json
import os
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn

from mmseg_heads import atomic
from mmseg_heads.atomic import (
    atomic_open,
    check_free_space,
    checkpoint_bytes,
    write_atomic,
)
from mmseg_heads.cli.main import main
from mmseg_heads.errors import UserError, WriteError

GIB = 1 << 30
Usage = namedtuple("Usage", "total used free")


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_in_the_write(path: Path):
    """A writer that gets half the new content into the temp file, then finds the disk full."""

    def write(data):
        with atomic_open(path) as handle:
            handle.write(data[: len(data) // 2])
            _full_disk()

    return write


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch, where):
    path = tmp_path / "last.pt"
    write_atomic(path, b"previous checkpoint" * 100)
    before = path.read_bytes()
    if where == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", _full_disk)
    if where == "rename":
        monkeypatch.setattr(atomic.os, "replace", _full_disk)
    write = _fail_in_the_write(path) if where == "write" else None
    with pytest.raises(WriteError) as info:
        (write or (lambda data: write_atomic(path, data)))(b"new" * 1000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no .last.pt.*.tmp left
    assert str(info.value) == (
        f"{path}: cannot write: No space left on device (ENOSPC); free some space, or choose "
        "another output folder (a previous version of the file is unchanged)"
    )
    assert isinstance(info.value, UserError) and isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOSPC


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "fsync", _full_disk)
    with pytest.raises(WriteError):
        write_atomic(tmp_path / "report.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_names_the_file_and_the_fix(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)  # as root, chmod would not stop us
    with pytest.raises(WriteError) as info:
        write_atomic(tmp_path / "out.md", "text")
    assert str(info.value).startswith(
        f"{tmp_path / 'out.md'}: cannot write: Permission denied (EACCES); choose an output "
        "folder you may write to"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_a_command_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    """Through the CLI: `report` writes comparison.md atomically; the old one survives."""
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.md").write_text("my old comparison\n")
    runs = []
    for name, score in (("a", 0.5), ("b", 0.7)):
        run = tmp_path / name
        run.mkdir()
        (run / "report.json").write_text(_tiny_report(name, score))
        runs.append(str(run))
    monkeypatch.setattr(atomic.os, "fsync", _full_disk)
    assert main(["report", *runs, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err
    assert f"{out / 'comparison.md'}: cannot write: No space left on device (ENOSPC)" in err
    assert (out / "comparison.md").read_text() == "my old comparison\n"
    assert [p.name for p in out.iterdir()] == ["comparison.md"]


def _tiny_report(name: str, score: float) -> str:
    task = {"classes": ["disc"], "macro_foreground_f": score, "per_class": {"disc": {"f": score}}}
    return json.dumps({"run": name, "tasks": {"shapes": task}})


# --- free space -------------------------------------------------------------------------------------
def test_not_enough_free_space_is_reported_before_work(tmp_path, monkeypatch):
    measured = []

    def usage(path):
        measured.append(Path(path))
        return Usage(100 * GIB, 90 * GIB, int(1.2 * GIB))

    monkeypatch.setattr(atomic.shutil, "disk_usage", usage)
    run_dir = tmp_path / "runs/x"  # not created yet: measured on its nearest existing parent
    config = tmp_path / "exp.yaml"
    with pytest.raises(UserError) as info:
        check_free_space(
            run_dir,
            int(3.4 * GIB),
            file=config,
            field="train.out",
            what="3 checkpoints of 25 M parameters: model + optimizer state",
        )
    assert str(info.value) == (
        f"{config}: train.out: not enough free space in {run_dir}: 1.2 GiB free, about 3.4 GiB "
        "needed (3 checkpoints of 25 M parameters: model + optimizer state); free some space or "
        "choose another folder"
    )
    assert measured == [tmp_path]
    assert not (tmp_path / "runs").exists()
    check_free_space(run_dir, int(1.1 * GIB), file=config, field="train.out")  # fits: no error


def test_small_amounts_are_shown_in_mib(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: Usage(GIB, GIB, 300 << 20))
    with pytest.raises(UserError, match="300 MiB free, about 512 MiB needed; free some space"):
        check_free_space(tmp_path, 512 << 20, file=None, field="--out")


def test_free_space_that_cannot_be_measured_is_no_error(tmp_path, monkeypatch):
    def unsupported(path):
        raise OSError(errno.ENOSYS, "statvfs not supported")

    monkeypatch.setattr(atomic.shutil, "disk_usage", unsupported)
    check_free_space(tmp_path, 10**15, file=None, field="--out")  # the writes will tell


def test_checkpoint_bytes_formula():
    # 25 M fp32 weights and Adam's two moments: 300 MB, plus 5 % and 1 MiB.
    assert checkpoint_bytes(25_000_000, 2) == 315_000_000 + (1 << 20)
    assert checkpoint_bytes(0, 0) == 1 << 20


@pytest.mark.parametrize(
    ("optimizer", "slots"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1),
        (lambda p: torch.optim.AdamW(p, lr=1e-3), 2),
    ],
    ids=["sgd-momentum", "adamw"],
)
def test_checkpoint_bytes_bounds_a_real_checkpoint(optimizer, slots):
    """What the trainer saves (weights, BatchNorm statistics, optimizer state after a step)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 256, 3), nn.BatchNorm2d(256), nn.ReLU(), nn.Conv2d(256, 384, 3)
    )
    params = sum(p.numel() for p in model.parameters())
    assert params > 800_000
    opt = optimizer(model.parameters())
    model(torch.randn(2, 3, 8, 8)).mean().backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}, buffer)
    actual = buffer.tell()
    estimate = checkpoint_bytes(params, slots)
    assert actual <= estimate <= 1.25 * actual
