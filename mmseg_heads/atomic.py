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
