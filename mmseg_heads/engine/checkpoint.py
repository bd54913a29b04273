"""Checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO

import torch

from mmseg_heads.atomic import atomic_open, interrupts_deferred, link_atomic
from mmseg_heads.errors import UserError, load_failure

FORMAT = "mmseg_heads.checkpoint/1"
#: How to fix a wrong checkpoint argument, appended to every checkpoint error.
GIVE_A_RUN = (
    "give a run directory or its checkpoints/best.pt or last.pt, as `mmseg-heads train` writes them"
)


def save_checkpoint(state: dict, path: str | Path, *also: str | Path) -> None:
    """Written atomically (temp file, fsync, rename): a crash leaves the previous file intact.

    ``also``: more names for the same state (``best.pt`` and ``last.pt`` of one epoch). Each is
    a hard link to ``path`` where the disk supports links, so one epoch's state takes its space
    once; each name is replaced atomically and in the order given.

    Ctrl-C while this writes lets it finish, every name, then stops (``KeyboardInterrupt``): cut
    in the middle, torch.save's C++ writer would fail with a ``RuntimeError`` instead.
    """
    with interrupts_deferred():
        with atomic_open(path) as handle:
            torch.save({"format": FORMAT, **state}, _paused_for_tests(handle))
        for other in also:
            link_atomic(path, other)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint of ours; anything else is a user error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found; {GIVE_A_RUN}", file=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"not a readable checkpoint ({load_failure(exc)}); {GIVE_A_RUN}", file=path
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"a PyTorch file but not an mmseg_heads checkpoint (no format marker); {GIVE_A_RUN}",
            file=path,
        )
    return state


#: What a numbered checkpoint counts: ``epoch_<N>.pt`` or ``step_<N>.pt`` (``train.checkpoint_every``).
NUMBERED_KINDS = ("epoch", "step")


def numbered_files(folder: Path, kind: str) -> list[Path]:
    """The ``<kind>_<N>.pt`` files in ``folder``, by ``N`` (``epoch_2.pt`` before ``epoch_10.pt``)."""
    prefix = f"{kind}_"
    return sorted(
        (p for p in folder.glob(f"{prefix}*.pt") if p.stem.removeprefix(prefix).isdigit()),
        key=lambda p: int(p.stem.removeprefix(prefix)),
    )


def resolve_checkpoint(run_or_checkpoint: str | Path, which: str | None = None) -> Path:
    """A run directory means its ``checkpoints/best.pt`` (or ``last.pt``); ``which`` (``best``,
    ``last``, or a numbered ``epoch_<N>``/``step_<N>``) asks for that one only. A file is taken
    as it is."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        names = (f"{which}.pt",) if which else ("best.pt", "last.pt")
        for name in names:
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        wanted = " or ".join(f"checkpoints/{n}" for n in names)
        folder = path / "checkpoints"
        kept = [p.stem for kind in NUMBERED_KINDS for p in numbered_files(folder, kind)]
        why = (
            f"it keeps {', '.join(kept)} besides best and last"
            if which not in (None, "best", "last") and kept
            else "has its training finished an epoch?"
        )
        raise UserError(
            f"no {wanted} in this run directory ({why}); give another run directory or a "
            "checkpoint file",
            file=path,
        )
    if which:
        raise UserError(
            f"--checkpoint {which} picks a checkpoint of a run directory; this is a file: give "
            "the run directory, or the file alone",
            file=path,
            field="--checkpoint",
        )
    return path


#: Tests only: a checkpoint write pauses this many seconds after its second chunk (then on
#: disk), so that a test can interrupt torch.save there. (A KeyboardInterrupt in the first chunk
#: happens to come out of torch.save as it is; in any later one, as a RuntimeError.)
TEST_SLOW_SAVE = "MMSEG_HEADS_TEST_SLOW_SAVE"


class _PausedWriter:
    def __init__(self, handle: BinaryIO, seconds: float) -> None:
        self.handle, self.seconds, self.chunks = handle, seconds, 0

    def write(self, data) -> int:
        written = self.handle.write(data)
        self.chunks += 1
        if self.chunks == 2:
            self.handle.flush()
            time.sleep(self.seconds)
        return written

    def flush(self) -> None:
        self.handle.flush()


def _paused_for_tests(handle: BinaryIO) -> BinaryIO | _PausedWriter:
    seconds = float(os.environ.get(TEST_SLOW_SAVE) or 0)
    return _PausedWriter(handle, seconds) if seconds > 0 else handle
