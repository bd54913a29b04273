"""Label mapping: the raw values of a label file -> class indices of a task.

A task maps raw values by its ``values`` table (key ``other`` catches the rest), by a
``threshold`` (binary masks), or as the class indices themselves; its ``ignore`` values, and
``values`` entries set to ``ignore``, become :data:`IGNORE_INDEX`. A raw value with no class is an
error naming the file, never a silent remap to ignore. :class:`~mmseg_heads.data.spec.TaskSpec`'s
methods (``map_labels``, ``map_values``, ``class_table``, ``unmapped_hint``) call these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmseg_heads.data.readers import extension_of
from mmseg_heads.errors import UserError

if TYPE_CHECKING:
    from mmseg_heads.data.spec import TaskSpec

#: Label value of pixels that no loss and no metric sees (padding, ``ignore`` raw values).
IGNORE_INDEX = 255
#: Lossy label formats: their compression smears class edges into values of no class.
JPEG_EXTENSIONS = (".jpg", ".jpeg")
#: Integer label arrays whose values span less than this use a lookup table instead of a sort.
_DENSE_RANGE = 1 << 16


def map_labels(task: TaskSpec, raw: np.ndarray, file: str | Path) -> np.ndarray:
    """Raw label values of one 2-D label image -> class indices (``IGNORE_INDEX`` for ignored
    pixels).

    Raises a :class:`UserError` naming ``file`` for a colour image, a value with no mapping or
    a class index out of range: never a silent remap to ignore.
    """
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raise UserError(
            f"task {task.name!r}: label image has {raw.shape[2]} colour channels; labels must be "
            "single-channel index maps (save a palette or grayscale PNG)",
            file=file,
            field=f"tasks.{task.name}.labels",
        )
    if raw.ndim != 2:
        raw = np.squeeze(raw)
    if raw.ndim > 2:  # e.g. an H×W×2 array: extra channels, not an index map
        raise UserError(
            f"task {task.name!r}: label array has shape {raw.shape}; labels must be "
            "single-channel H×W index maps",
            file=file,
            field=f"tasks.{task.name}.labels",
        )
    return map_values(task, raw, file)


def map_values(task: TaskSpec, raw: np.ndarray, file: str | Path) -> np.ndarray:
    """Raw label values -> class indices, element-wise, for an array of any shape (a whole
    label volume too). Errors as :func:`map_labels`."""
    if task.threshold is not None:
        out = (raw > task.threshold).astype(np.int64)
        if task.ignore:
            out[np.isin(raw, task.ignore)] = IGNORE_INDEX
        return out
    uniques, index_of = unique_values(raw)
    return class_table(task, uniques, file)[index_of()]


def class_table(task: TaskSpec, uniques: np.ndarray, file: str | Path) -> np.ndarray:
    """The class index (``IGNORE_INDEX`` for ignored values) of each raw value in ``uniques``.

    Raises:
        UserError: naming ``file``, for raw values with no class.
    """
    if task.threshold is not None:
        table = (uniques > task.threshold).astype(np.int64)
        table[np.isin(uniques, task.ignore)] = IGNORE_INDEX
        return table
    table = np.empty(len(uniques), dtype=np.int64)
    unmapped = []
    for i, value in enumerate(uniques.tolist()):
        target = IGNORE_INDEX if value in task.ignore else lookup(task, value)
        if target is None:
            unmapped.append(value)
        else:
            table[i] = target
    if unmapped:
        hint = unmapped_hint(task, [file])
        raise UserError(
            f"task {task.name!r}: raw label values {unmapped} have no class "
            f"(classes 0..{task.num_classes - 1}); {hint}",
            file=file,
            field=f"tasks.{task.name}.values",
        )
    return table


def unmapped_hint(task: TaskSpec, files: list[str | Path]) -> str:
    """How to fix raw label values with no class found in ``files`` (label files)."""
    if any(extension_of(f) in JPEG_EXTENSIONS for f in files):
        return (
            "the label files are JPEG, whose lossy compression creates in-between values "
            "along class edges: save the labels in a lossless format (PNG), from the original "
            "annotation (mapping these values with `values` would keep wrong pixels)"
        )
    return "add them to `values`" if task.values else "give a `values` map or a `threshold`"


def lookup(task: TaskSpec, value) -> int | None:
    """The class index of one raw value by the task's ``values`` (identity without them), or
    ``None`` when it has none (``ignore`` values are the caller's to check first)."""
    # NaN, infinities and fractions (float label files) are never a class index; int() would
    # fail on the first two and round the last.
    whole = int(value) if float(value).is_integer() else None
    if task.values is None:
        return whole if whole is not None and 0 <= whole < task.num_classes else None
    target = task.values.get(value, task.values.get(whole, task.values.get("other")))
    if target is None:
        return None
    return IGNORE_INDEX if target == "ignore" else int(target)


def dense_minimum(raw: np.ndarray) -> int | None:
    """The smallest value of a non-empty integer array whose values span less than
    ``_DENSE_RANGE`` (every label map we know: 0..255, MyoPS' 0..2221), else ``None``: such an
    array is counted with an O(n) bincount from that value instead of a sort."""
    if raw.size and np.issubdtype(raw.dtype, np.integer):
        low, high = int(raw.min()), int(raw.max())
        if high - low < _DENSE_RANGE:
            return low
    return None


def unique_values(raw: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """``(sorted unique values, thunk giving each element's index into them)``.

    Integer labels with a small value range take an O(n) bincount path (see
    :func:`dense_minimum`), which matters for whole volumes; anything else uses ``np.unique``.
    """
    low = dense_minimum(raw)
    if low is not None:
        offset = raw.astype(np.int64) - low
        counts = np.bincount(offset.ravel())
        present = np.flatnonzero(counts)
        position = np.zeros(len(counts), dtype=np.int64)
        position[present] = np.arange(len(present))
        return (present + low).astype(raw.dtype), lambda: position[offset]
    uniques, inverse = np.unique(raw, return_inverse=True)
    return uniques, lambda: inverse.reshape(raw.shape)
