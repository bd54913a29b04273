"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash, a full disk or an exception while writing leaves the previous file intact and no half
file behind; a failed write (``OSError``: no space, quota, permission) is reported as a
:class:`~mmseg_heads.errors.WriteError` naming the file. Files get the usual permissions
(``0o666`` less the umask), not mkstemp's private ones. :func:`check_free_space` lets a command
stop before any work when the outputs it will write cannot fit, :func:`refuse_foreign` when they
would replace a file we did not write. :func:`interrupts_deferred` lets a write that Ctrl-C must
not cut (a checkpoint: torch.save's C++ writer turns the ``KeyboardInterrupt`` into a
``RuntimeError``) finish first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from mmseg_heads.errors import UserError, WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_beside(path: Path) -> Path:
    """An empty, closed temp file in ``path``'s folder (so the final rename stays on one disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the usual permissions and rename it over ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


#: What to do about a failed write, by errno.
_WRITE_FIXES = {
    errno.ENOSPC: "free some space, or choose another output folder",
    errno.EDQUOT: "free some space within your quota, or choose another output folder",
    errno.EACCES: "choose an output folder you may write to",
    errno.EPERM: "choose an output folder you may write to",
    errno.EROFS: "choose an output folder on a writable disk",
}


def write_failure(path: Path, exc: OSError) -> WriteError:
    """The user error for a failed write of ``path``: the system's reason and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = f" ({errno.errorcode[exc.errno]})" if exc.errno in errno.errorcode else ""
    fix = _WRITE_FIXES.get(exc.errno, "check the output folder")
    return WriteError(
        f"cannot write: {reason}{code}; {fix} (a previous version of the file is unchanged)",
        file=path,
        errno=exc.errno,
    )


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears whole, or not at all.

    Raises:
        WriteError: an ``OSError`` while writing (e.g. ``ENOSPC`` from a write, the fsync or the
            close): the temp file is removed, a previous ``p`` is left as it was.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        tmp = temp_path_beside(path)
        with open(tmp, "wb") as handle:  # tests shadow `atomic.open` to fill the disk mid-file
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # a full disk may only show here (delayed allocation)
        publish(tmp, path)
    except WriteError:
        raise
    except OSError as exc:
        raise write_failure(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):  # never hide the write's own error behind this
                tmp.unlink(missing_ok=True)


class DeferredInterrupt(KeyboardInterrupt):
    """Ctrl-C that came during an :func:`interrupts_deferred` block, raised once it finished."""


_deferring = False  # an interrupts_deferred block is running: a nested one leaves it the signal


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """``with interrupts_deferred(): write()``: Ctrl-C (SIGINT) waits until the block is done.

    Inside the block a SIGINT is only recorded (a second one too); when the block has finished,
    the handler found on entry is restored and then receives it once: Python's default handler
    as :class:`DeferredInterrupt`, a ``KeyboardInterrupt``. When the block raises, its own error
    propagates instead. For short writes only: Ctrl-C waits for them.

    Signal handlers belong to the main thread: elsewhere, inside another such block, or when
    SIGINT is ignored or handled outside Python, the block runs as it is.
    """
    global _deferring
    previous = signal.getsignal(signal.SIGINT)
    if _deferring or threading.current_thread() is not threading.main_thread():
        previous = None
    if not callable(previous):
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, record)  # a SIGINT already pending reaches `previous` here
    _deferring = True
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)  # hands a pending SIGINT to `record` first
        _deferring = False
    if received:
        if previous is signal.default_int_handler:
            raise DeferredInterrupt
        previous(signal.SIGINT, None)


def link_atomic(source: str | Path, path: str | Path) -> None:
    """Give ``source``'s content the name ``path`` too, replacing ``path`` atomically.

    A hard link (no extra space) where the disk has them, else a copy; either way ``path`` is
    the old file or the new one, never half of one. Writing ``source`` later by rename (as
    :func:`atomic_open` does) leaves ``path`` as it was.
    """
    source, path = Path(source), Path(path)
    tmp: Path | None = None
    try:
        tmp = temp_path_beside(path)
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


#: ``os.link`` errors that mean "this disk has no hard links": copy instead.
_NO_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def write_atomic(path: str | Path, data: str | bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def check_output_path(path: str | Path, *, field: str, folder: bool = True) -> None:
    """Fail before any work when ``path`` cannot be written: a file where a folder is wanted
    (``folder``), a folder where a file is wanted, or a file among its parents.

    Raises:
        UserError: naming ``path`` and the argument ``field`` (``--out``).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(
            "is a file, not a folder; choose a folder for the output", file=path, field=field
        )
    if not folder and path.is_dir():
        raise UserError(
            f"is a folder; give a file name, e.g. {path / 'model.onnx'}", file=path, field=field
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(
                    f"{parent} is a file, not a folder; choose another path", file=path, field=field
                )
            break


def refuse_foreign(
    paths: Iterable[Path],
    is_ours: Callable[[Path], bool],
    field: str,
    *,
    writer: str,
    overwrite: str | None = None,
    file: str | Path | None = None,
    why: str | None = None,
) -> None:
    """Stop before writing over a file we did not write: each of ``paths`` that exists must be one
    ``is_ours`` recognises by the mark its writer leaves (a PNG text chunk or NIfTI ``descrip``
    of ``predict``, ONNX metadata of ``export``, a report's ``run_dir``), and may then be replaced.

    Args:
        paths: the files about to be written.
        is_ours: whether an existing file is one of ours.
        field: the flag that chose where they go (``--out``), named in the error.
        writer: the command that writes them, for the message (``predict``).
        overwrite: the flag that replaces such files anyway (``--overwrite``), offered as a fix;
            ``None`` where there is none (the caller checks only when it is not given).
        file: what the error names before ``field`` (the output folder), if anything.
        why: what the files are, in place of "which ``writer`` did not write" (another run's
            report: files of ours that must not be replaced either).

    Raises:
        UserError: naming the first three such files and ``field``, and how to go on.
    """
    foreign = [path for path in paths if path.exists() and not is_ours(path)]
    if not foreign:
        return
    more = len(foreign) - 3
    shown = ", ".join(map(str, foreign[:3])) + (f" and {more} more" if more > 0 else "")
    if overwrite is not None:
        fix = f"move {'it' if len(foreign) == 1 else 'them'} away, or pass {overwrite}"
    else:
        fix = "or move or remove those files first"
    raise UserError(
        f"would overwrite {shown}, {why or f'which {writer} did not write'}; choose another "
        f"{field}, {fix}",
        file=file,
        field=field,
    )


def checkpoint_bytes(num_parameters: int, optimizer_slots: int) -> int:
    """About how large one checkpoint of a model with ``num_parameters`` is on disk.

    fp32 weights plus ``optimizer_slots`` fp32 tensors per weight (Adam and AdamW: 2, their two
    moments; SGD with momentum: 1), plus 5 % and 1 MiB for BatchNorm statistics, the scheduler,
    RNG states, the config and the pickle's own overhead.
    """
    return int(4 * num_parameters * (1 + optimizer_slots) * 1.05) + (1 << 20)


def format_bytes(size: float, decimals: int = 1) -> str:
    """``1.2 GiB``, ``340 MiB``: ``decimals`` in GiB, whole MiB below that."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.{decimals}f} GiB"
    return f"{size / (1 << 20):.0f} MiB"


def check_free_space(
    folder: str | Path, needed_bytes: int, *, file: str | Path | None, field: str, what: str = ""
) -> None:
    """Fail before any work when ``folder`` lacks ``needed_bytes`` of free space.

    A folder that does not exist yet is measured on the disk of its nearest existing parent.
    When the free space cannot be measured, nothing is raised: the writes themselves then report
    a full disk (:func:`atomic_open`).

    Args:
        folder: where the outputs go.
        needed_bytes: about how much they take.
        file, field: the config file and key (or ``None`` and the argument) that chose ``folder``.
        what: what the outputs are, for the message, e.g. ``3 checkpoints of 25 M parameters``.

    Raises:
        UserError: ``not enough free space in runs/x: 1.2 GiB free, about 3.4 GiB needed (…)``.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(existing).free  # what this user may fill, less root's reserve
    except OSError:
        return
    if free >= needed_bytes:
        return
    detail = f" ({what})" if what else ""
    raise UserError(
        f"not enough free space in {folder}: {format_bytes(free)} free, about "
        f"{format_bytes(needed_bytes)} needed{detail}; free some space or choose another folder",
        file=file,
        field=field,
    )
