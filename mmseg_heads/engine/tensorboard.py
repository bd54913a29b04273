"""Optional TensorBoard logging (``train.tensorboard: true``): the epoch lines of metrics.jsonl.

``metrics.jsonl`` stays the record; TensorBoard only draws it live. Scalars per epoch:
``train/<loss term>``, ``train/lr`` and ``<split>/<task>/foreground_f`` (+ per class F).
"""

from __future__ import annotations

from pathlib import Path

from mmseg_heads.errors import UserError


def writer_class(enabled: bool, *, file: str):
    """TensorBoard's ``SummaryWriter`` class, or ``None`` when off; checked before any write."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError(
            "TensorBoard is not installed: pip install 'mmseg-heads[tensorboard]' "
            "(or set train.tensorboard: false; metrics.jsonl has the same numbers)",
            file=file,
            field="train.tensorboard",
        ) from exc
    return SummaryWriter


def open_writer(summary_writer, run_dir: Path, epoch: int):
    """A writer on ``RUN_DIR/tensorboard``, or ``None`` when off.

    ``epoch``: the last finished epoch. A resumed run drops points written after it (by the
    interrupted run), so TensorBoard draws each epoch once, as metrics.jsonl keeps it.
    """
    if summary_writer is None:
        return None
    return summary_writer(
        log_dir=str(run_dir / "tensorboard"), purge_step=epoch + 1 if epoch else None
    )


def log_epoch(writer, epoch: int, train_record: dict, val_record: dict | None) -> None:
    """One point per scalar at ``epoch``; nested records (skipped batches) are left out.

    ``val_record``: the epoch's last validation (``train.val_every`` may validate several times
    an epoch, or none; ``metrics.jsonl`` keeps them all).
    """
    if writer is None:
        return
    for name, value in train_record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"train/{name}", value, epoch)
    if val_record is None:
        writer.flush()
        return
    split = val_record["split"]
    writer.add_scalar(f"{split}/score", val_record["score"], epoch)
    for task, summary in val_record["tasks"].items():
        if summary["macro_foreground_f"] is not None:
            writer.add_scalar(f"{split}/{task}/foreground_f", summary["macro_foreground_f"], epoch)
        for name, value in summary["f"].items():
            if value is not None:
                writer.add_scalar(f"{split}/{task}/f/{name}", value, epoch)
    writer.flush()
