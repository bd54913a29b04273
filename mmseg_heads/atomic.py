"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash, a full disk or an exception while writing leaves the previous file intact and no half
file behind. Files get the usual permissions (``0o666`` less the umask), not mkstemp's private ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mmseg_heads.errors import UserError


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


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears whole, or not at all."""
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        with tmp.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
