"""From a file's array to 2-D planes: the one path shared by training, evaluation and predict.

A data spec with a ``volume`` section reads every file (NIfTI, ``.npy``, …) as ``X×Y×Z`` or
``X×Y×Z×C`` and cuts it into planes across ``volume.slice_axis``; without one, a file is one 2-D
image (a NIfTI ``X×Y×1`` loses its slice axis). ``predict`` also takes a NIfTI volume without a
``volume`` section (cut across axis 2). With 2.5-D context, each plane brings its neighbours.
:class:`VolumeCache` keeps decoded volumes so that the slices of a case decode it once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmseg_heads.data.readers import NIFTI_EXTENSIONS, extension_of
from mmseg_heads.errors import UserError


class VolumeCache:
    """Least-recently-used store of decoded files, grouped by case.

    Every file of a case (its modalities and label volumes) is decoded once and kept until
    ``capacity`` other cases have been read since. Each dataset owns one, so each DataLoader
    worker has its own (it is emptied when the dataset is pickled to a worker).

    Args:
        capacity: cases kept; 0 keeps nothing.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._cases: OrderedDict[str, dict[Path, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, case: str, path: Path, read: Callable[[Path], np.ndarray]) -> np.ndarray:
        """The array of ``path`` (a file of ``case``), decoded by ``read`` on a miss."""
        files = self._cases.get(case)
        if files is not None and path in files:
            self._cases.move_to_end(case)
            self.hits += 1
            return files[path]
        self.misses += 1
        array = read(path)
        if self.capacity == 0:
            return array
        array.flags.writeable = False  # shared by every slice of the case: never edited in place
        self._cases.setdefault(case, {})[path] = array
        self._cases.move_to_end(case)
        while len(self._cases) > self.capacity:
            self._cases.popitem(last=False)
        return array

    def __len__(self) -> int:
        return len(self._cases)

    def clear(self) -> None:
        self._cases.clear()


def context_indices(index: int, depth: int, context: int) -> list[int]:
    """Slices ``index - context … index + context`` of a stack of ``depth``, edges replicated."""
    return [min(max(i, 0), depth - 1) for i in range(index - context, index + context + 1)]


def with_context(planes: np.ndarray, context: int) -> np.ndarray:
    """``S×C×H×W`` prepared planes -> ``S×(C·(2k+1))×H×W``: each slice with its neighbours'
    channels, as :meth:`MultiModalDataset.read_images` gives them (``predict`` uses this)."""
    if context == 0:
        return planes
    depth = len(planes)
    return np.stack(
        [np.concatenate(planes[context_indices(i, depth, context)]) for i in range(depth)]
    )


def as_volume(array: np.ndarray, path: Path, spec: Path) -> np.ndarray:
    """A file read for slicing: ``X×Y×Z`` or ``X×Y×Z×C`` (trailing length-1 axes dropped)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4):
        raise UserError(
            f"{path} has shape {array.shape}; the `volume` section reads X×Y×Z or X×Y×Z×C arrays",
            file=spec,
            field="volume",
        )
    return array


def as_plane(array: np.ndarray, path: Path, spec: Path) -> np.ndarray:
    """A file read as one 2-D image: a NIfTI ``X×Y×1`` loses its slice axis; a NIfTI with more
    slices is a volume, which needs the spec's ``volume`` section."""
    if extension_of(path) in NIFTI_EXTENSIONS and array.ndim >= 3:
        if array.shape[2] != 1:
            raise UserError(
                f"{path} is a 3-D volume (shape {array.shape}); add a `volume` section, e.g. "
                "`volume: {slice_axis: 2}`, to read it as 2-D slices",
                file=spec,
                field="volume",
            )
        array = array[:, :, 0]
    return array


def plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` of ``volume`` across ``axis``, contiguous (``H×W`` or ``H×W×C``)."""
    # Basic indexing, not np.take: NIfTI arrays are Fortran-ordered, where take is ~1000× slower.
    return np.ascontiguousarray(volume[(slice(None),) * axis + (index,)])


def file_planes(
    array: np.ndarray, path: Path, spec: Path, slice_axis: int | None
) -> tuple[np.ndarray, int | None]:
    """Every plane of a file's array: ``(S×H×W or S×H×W×C, the axis cut across or None)``.

    ``slice_axis``: the spec's ``volume.slice_axis``, or ``None`` for a spec without ``volume``,
    where a NIfTI file with more than one slice is still cut across axis 2 (``predict`` segments
    a volume whatever the spec) and anything else is one plane.
    """
    if slice_axis is None:
        nifti = extension_of(path) in NIFTI_EXTENSIONS
        squeezed = array[..., 0] if nifti and array.ndim == 4 and array.shape[-1] == 1 else array
        if not (nifti and squeezed.ndim >= 3 and squeezed.shape[2] > 1):
            return as_plane(array, path, spec)[None], None
        slice_axis = 2
    volume = as_volume(array, path, spec)
    return np.stack([plane(volume, slice_axis, i) for i in range(volume.shape[slice_axis])]), (
        slice_axis
    )
