"""A training run's directory: created once and never overwritten, room for its checkpoints, and
``metrics.jsonl`` (one line per batch, a train line per epoch, a line per validation)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import yaml

from mmseg_heads.atomic import check_free_space, checkpoint_bytes, write_atomic
from mmseg_heads.config import Config
from mmseg_heads.engine.checkpoint import numbered_files
from mmseg_heads.engine.distributed import SINGLE_PROCESS, World, barrier
from mmseg_heads.errors import UserError


def holds_run(run_dir: Path) -> bool:
    """A run has started once it logged an epoch or saved a checkpoint."""
    return (run_dir / "metrics.jsonl").exists() or any((run_dir / "checkpoints").glob("*.pt"))


def prepare_run_dir(config: Config, world: World = SINGLE_PROCESS) -> Path:
    """Create the run directory; one that already holds a run is never overwritten.

    Every process checks (so all stop with the same message); rank 0 alone writes.
    """
    run_dir = config.run_dir()
    if holds_run(run_dir):
        raise UserError(
            f"run directory {run_dir} already holds a run; continue it with `--resume auto`, or set "
            f"another `train.out` (e.g. train.out={run_dir}_2)",
            file=config.path,
            field="train.out",
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create run directory {run_dir}: {exc}", file=config.path, field="train.out"
        ) from exc
    if world.is_main:
        write_run_config(config, run_dir)
        shutil.copyfile(config.spec.path, run_dir / "data_spec.yaml")
    barrier(world)
    return run_dir


def optimizer_slots(optimizer: str) -> int:
    """fp32 tensors the optimizer keeps per weight: SGD's momentum, Adam's two moments."""
    return 1 if optimizer == "sgd" else 2


def numbered_kind(train_cfg: dict) -> str:
    """What ``train.checkpoint_every`` counts: ``step`` with a ``train.steps`` budget (files
    ``step_<N>.pt``), else ``epoch`` (``epoch_<N>.pt``)."""
    return "step" if train_cfg["steps"] is not None else "epoch"


def numbered_name(kind: str, number: int) -> str:
    """``epoch_3.pt``, ``step_2000.pt``: a numbered checkpoint's file name."""
    return f"{kind}_{number}.pt"


def numbered_checkpoints(train_cfg: dict, done: int = 0) -> int | None:
    """Numbered checkpoints still to be written and kept: one every ``checkpoint_every`` epochs
    of ``train.epochs`` (``epoch_<N>.pt``), or steps of ``train.steps`` (``step_<N>.pt``), after
    the ``done`` ones (epochs or steps already trained), at most ``keep_checkpoints``."""
    every, keep = train_cfg["checkpoint_every"], train_cfg["keep_checkpoints"]
    if not every:
        return 0
    total = train_cfg["steps"] if numbered_kind(train_cfg) == "step" else train_cfg["epochs"]
    numbered = max(0, total // every - done // every)
    return numbered if keep is None else min(numbered, keep)


def check_checkpoint_space(
    config: Config, run_dir: Path, modules: list[torch.nn.Module], *, done: int
) -> None:
    """Stop before the first epoch when the checkpoints still to come will not fit.

    ``modules``: what each checkpoint holds with its optimizer state (the model and the loss);
    ``done``: epochs already trained, or steps with a ``train.steps`` budget (a resumed run
    needs only the rest).
    """
    train_cfg = config.train
    params = sum(p.numel() for module in modules for p in module.parameters())
    numbered = numbered_checkpoints(train_cfg, done)
    folder = run_dir / "checkpoints"
    new = sum(not (folder / name).exists() for name in ("last.pt", "best.pt"))
    files = new + numbered + 1  # +1: an atomic save holds its temp file beside the old one
    check_free_space(
        folder,
        files * checkpoint_bytes(params, optimizer_slots(train_cfg["optimizer"])),
        file=config.path,
        field="train.out",
        what=f"{files} checkpoints of {params / 1e6:.1f} M parameters: model + optimizer state",
    )


def write_run_config(config: Config, run_dir: Path) -> None:
    """``RUN/config.yaml``: the resolved config the run trains with (its data spec absolute)."""
    write_atomic(
        run_dir / "config.yaml",
        yaml.safe_dump({**config.raw, "data": str(config.spec.path.resolve())}, sort_keys=False),
    )


def append_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


def prune_checkpoints(folder: Path, keep: int | None, kind: str = "epoch") -> list[Path]:
    """Remove all but the newest ``keep`` numbered files of ``kind`` (``epoch_<N>.pt``, or
    ``step_<N>.pt``: see :func:`numbered_kind`) (``train.keep_checkpoints``); ``best.pt``,
    ``last.pt`` and the other kind are never touched. Returns the files removed."""
    if keep is None:
        return []
    numbered = numbered_files(folder, kind)
    old = numbered[: max(0, len(numbered) - keep)]
    for path in old:
        path.unlink(missing_ok=True)  # a hard link: best.pt/last.pt keep their data
    return old


class MetricsLog:
    """``metrics.jsonl`` written as training goes: records are buffered and reach the file at
    least every ``every`` seconds (a per-step row shows up while its epoch runs, and a crash
    loses at most those seconds), and at :meth:`flush` (each epoch's end)."""

    def __init__(self, path: Path, every: float = 5.0, clock=time.monotonic):
        self.path, self.every, self.clock = path, every, clock
        self._pending: list[dict] = []
        self._last = clock()

    def add(self, *records: dict) -> None:
        self._pending.extend(records)
        if self.clock() - self._last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            append_jsonl(self.path, self._pending)
            self._pending = []
        self._last = self.clock()


def truncate_log(path: Path, epoch: int, step: int | None = None) -> None:
    """Drop the lines of epochs after ``epoch`` (written before a crash); with ``step`` (a state
    inside ``epoch``), also that epoch's lines of later steps and its epoch line. Rewritten
    atomically."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]

    def kept_line(row: dict) -> bool:
        if step is None or row.get("epoch", 0) != epoch:
            return row.get("epoch", 0) <= epoch
        return row.get("split") != "train" and row.get("step", 0) <= step

    kept = [line for line in lines if kept_line(json.loads(line))]
    if len(kept) != len(lines):
        write_atomic(path, "".join(line + "\n" for line in kept))
