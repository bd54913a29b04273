"""What training tells as it goes: the epoch line (loss, validation F, LR, time, the time left),
a line per validation of ``train.val_every``, and without a terminal a progress line now and then
(piped to a log file, tqdm draws nothing: no carriage-return junk)."""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Without a terminal, ``train`` logs how far an epoch is at most this often.
PROGRESS_LINE_SECONDS = 60.0


class BatchLines:
    """``epoch 3: batch 40/125`` at most every :data:`PROGRESS_LINE_SECONDS`, where stderr is
    not a terminal (and ``enabled``: the progress is shown at all)."""

    def __init__(self, enabled: bool) -> None:
        self.noted = time.monotonic() if enabled and not sys.stderr.isatty() else None

    def batch(self, epoch: int, index: int, total: int) -> None:
        if self.noted is not None and time.monotonic() - self.noted >= PROGRESS_LINE_SECONDS:
            self.noted = time.monotonic()
            log.info("epoch %d: batch %d/%d", epoch, index + 1, total)


def remaining_text(durations: list[float], epochs_left: int) -> str:
    """``; about 12 min left``: the median epoch so far times the epochs left (none at the end)."""
    if not epochs_left or not durations:
        return ""
    seconds = statistics.median(durations) * epochs_left
    if seconds < 90:
        return f"; about {seconds:.0f} s left"
    if seconds < 5400:
        return f"; about {seconds / 60:.0f} min left"
    return f"; about {seconds / 3600:.1f} h left"


def scores_text(validation: dict) -> str:
    """``shapes F 0.412, hotspots F 0.287``: each task's macro foreground F of a validation line
    of ``metrics.jsonl``."""
    return ", ".join(
        f"{task} F {scores['macro_foreground_f'] or 0:.3f}"
        for task, scores in validation["tasks"].items()
    )


def validation_text(validation: dict, improved: bool) -> str:
    """``step 600 (epoch 3): shapes F 0.412, …``: one validation of ``train.val_every``."""
    return f"step {validation['step']} (epoch {validation['epoch']}): {scores_text(validation)}" + (
        " (best so far)" if improved else ""
    )


def epoch_text(
    epochs: int,
    train: dict,
    validations: list[tuple[dict, bool]],
    *,
    seconds: float,
    left: str,
    by_step: bool,
) -> str:
    """The line that ends an epoch: ``epoch 3/40: loss 0.4123; shapes F 0.412, …; lr 0.001;
    41.2 s; about 25 min left (best so far)``.

    ``train``: the epoch's ``train`` line; ``validations``: ``(validation line, improved)`` of
    each validation in the epoch, the F shown being the last one's (``at step N`` with
    ``by_step``, i.e. ``train.val_every``; ``no validation`` when there was none); ``left``:
    :func:`remaining_text`.
    """
    if validations:
        last = validations[-1][0]
        scores = scores_text(last) + (f" at step {last['step']}" if by_step else "")
    else:
        scores = "no validation"
    best = " (best so far)" if any(improved for _, improved in validations) else ""
    return (
        f"epoch {train['epoch']}/{epochs}: loss {train['loss']:.4f}; {scores}; "
        f"lr {train['lr']:.3g}; {seconds:.1f} s{left}{best}"
    )


def nothing_left_text(run_dir: Path, epoch: int, step: int, train_cfg: dict, epochs: int) -> str:
    """A resumed run whose ``last.pt`` already holds its whole budget: how to train on."""
    budget = train_cfg["steps"]
    key, value = ("train.steps", budget) if budget else ("train.epochs", epochs)
    return (
        f"nothing left to train: {run_dir / 'checkpoints' / 'last.pt'} already holds epoch "
        f"{epoch} (step {step}) of {key} {value}; to train on, raise it: "
        f"`mmseg-heads train --resume {run_dir} --resume-with-changes {key}=…`"
    )


def interrupted_text(run_dir: Path, epoch: int, saved: tuple[int, int, int] | None) -> str:
    """Ctrl-C in ``epoch``: what ``last.pt`` holds (``saved``: its epoch, step and batches of
    an epoch in progress, 0 for a complete one) and how to continue."""
    if saved is None:
        return f"interrupted in epoch {epoch}, before any checkpoint: start again to train"
    saved_epoch, step, batches = saved
    holds = (
        f"step {step} (epoch {saved_epoch}, after its batch {batches})"
        if batches
        else f"epoch {saved_epoch}"
    )
    return (
        f"interrupted in epoch {epoch}: {run_dir / 'checkpoints' / 'last.pt'} holds {holds}; "
        f"continue with `mmseg-heads train --resume {run_dir}`"
    )
