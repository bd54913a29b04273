"""The data scan's reads: every file a spec names, decoded once, into the facts the checks need.

A file is read once however many fields name it (a label file that several tasks share too), in
parallel threads behind a progress bar, into a :class:`~mmseg_heads.data.scan_cache.FileFacts`
(shape, dtype, finiteness, label value or colour histogram). Facts come from the cache
(:mod:`mmseg_heads.data.scan_cache`) while a file is unchanged, and go into it after a read.
The checks on the facts are :mod:`mmseg_heads.data.scan`'s.
"""

from __future__ import annotations

import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmseg_heads.data.labels import dense_minimum, is_colour_image, pack_colours
from mmseg_heads.data.readers import read_array, read_colour_array
from mmseg_heads.data.scan_cache import FileFacts, FileStamp, Histogram, ScanCache
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.errors import UserError

#: What reading one file gave: its facts, a problem message (it does not decode), or ``None`` (no
#: such file).
Read = FileFacts | str | None


@dataclass(frozen=True)
class Needs:
    """Which histograms of a file the checks need: raw values (index labels), colours (colour
    labels; a file two tasks share in both formats needs both)."""

    values: bool = False
    colours: bool = False


def value_histogram(raw: np.ndarray) -> Histogram:
    """``((raw value, pixels), ...)`` of an array, ascending by value (NaN last, counted once)."""
    low = dense_minimum(raw)
    if low is not None:
        counts = np.bincount(raw.ravel().astype(np.int64) - low)
        present = np.flatnonzero(counts)
        return tuple(zip((present + low).tolist(), counts[present].tolist(), strict=True))
    values, counts = np.unique(raw, return_counts=True)
    return tuple(zip(values.tolist(), counts.tolist(), strict=True))


def colour_histogram(raw: np.ndarray, path: Path) -> Histogram:
    """``((packed colour, pixels), ...)`` of an RGB(A) image, ascending
    (:data:`~mmseg_heads.data.labels.TRANSLUCENT`, the pixels with alpha < 255, first); ``()`` for
    an array that is not an RGB image."""
    if not is_colour_image(raw):
        return ()
    return value_histogram(pack_colours(raw, path))


def file_facts(path: Path, *, values: bool, colours: bool = False) -> FileFacts:
    """Decode the whole file and keep what the checks need (``values``: a raw value histogram;
    ``colours``: a histogram of colours, from the file read as colours, see
    :func:`~mmseg_heads.data.readers.read_colour_array`).

    Why not only the header, which would give shape and dtype for a fraction of the time (PIL's
    ``Image.open`` and nibabel's ``load`` read no pixels): a PNG's size and mode sit in its first
    33 bytes and a NIfTI header in its first 348, so a header read passes a file whose pixel data
    is truncated or corrupt, and that file would stop training halfway. Only decoding every pixel
    proves a file decodes; NaN/Inf and label values are in the pixels too. The cache makes it a
    cost paid once per version of a file.

    Raises:
        UserError: the file does not decode (naming it).
    """
    coloured = read_colour_array(path) if colours else None
    # The shape is the index read's where there is one; a file of colour tasks only is read once.
    array = read_array(path) if coloured is None or values else coloured
    floating = np.issubdtype(array.dtype, np.floating)
    return FileFacts(
        shape=tuple(int(s) for s in array.shape),
        dtype=str(array.dtype),
        finite=bool(np.isfinite(array).all()) if floating else None,
        values=value_histogram(array) if values else None,
        colours=colour_histogram(coloured, path) if coloured is not None else None,
    )


def files_to_read(spec: DataSpec, ids: list[str]) -> dict[Path, Needs]:
    """``{file: the histograms it needs}``: every modality and label file of ``ids``, each once
    (tasks often share one label file)."""
    files: dict[Path, Needs] = {}
    for sample_id in ids:
        for name in spec.modalities:
            files.setdefault(spec.modality_file(name, sample_id), Needs())
        for name, task in spec.tasks.items():
            path = spec.label_file(name, sample_id)
            before = files.get(path, Needs())
            if task.label_format == "colour":
                files[path] = Needs(before.values, colours=True)
            else:
                files[path] = Needs(True, before.colours)
    return files


def _read_one(path: Path, needs: Needs, store: ScanCache | None) -> tuple[Read, tuple | None]:
    """``(what reading gave, (stamp, read time) to cache it under, or None)``."""
    try:
        status = path.stat()
    except OSError:
        return None, None
    if not stat.S_ISREG(status.st_mode):  # a folder or a device where a file is wanted
        return None, None
    stamp = FileStamp.of(status)
    wanted = {"values": needs.values, "colours": needs.colours}
    cached = store.get(path, stamp, **wanted) if store is not None else None
    if cached is not None:
        return cached, None
    started = time.time_ns()
    try:
        facts = file_facts(path, **wanted)
    except UserError as exc:
        return f"{path}: {exc.message}", None  # not cached: a broken file is read again next time
    try:
        unchanged = FileStamp.of(path.stat()) == stamp
    except OSError:
        unchanged = False
    # A file that changed while it was read is not cached: the facts may mix two versions.
    return facts, ((stamp, started) if unchanged else None)


def read_all(files: dict[Path, Needs], store: ScanCache | None, threads: int) -> dict[Path, Read]:
    """What reading each of ``files`` gave, ``threads`` at a time; new facts go into ``store``
    (saving it is the caller's)."""
    # A bar on a terminal only (tqdm's disable=None): a scan of thousands of files takes a while.
    with (
        ThreadPoolExecutor(threads) as pool,
        tqdm(total=len(files), desc="scan", unit="file", disable=None, leave=False) as bar,
    ):

        def read(item):
            try:
                return _read_one(*item, store)
            finally:
                bar.update()

        results = list(pool.map(read, files.items()))
    read: dict[Path, Read] = {}
    for path, (result, stamp) in zip(files, results, strict=True):
        read[path] = result
        if store is not None and stamp is not None:
            store.put(path, stamp[0], result, stamp[1])
    return read
