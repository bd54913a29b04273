"""``MultiModalDataset``: one sample = every modality of one id + every task's label map.

With a ``volume`` section in the data spec, each 3-D file is a stack of 2-D samples: the ids become
``"{case}#{slice}"``, slices are kept by the ``keep`` rule, and decoded volumes are kept in a small
per-dataset LRU (:class:`VolumeCache`), so that reading the slices of one case decompresses its
files once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mmseg_heads.data.augment import TrainTransform
from mmseg_heads.data.checks import (
    channel_mismatch,
    missing_label_file,
    missing_modality_file,
    size_mismatch,
)
from mmseg_heads.data.labels import IGNORE_INDEX, unique_values
from mmseg_heads.data.normalize import clip_percentiles, normalize
from mmseg_heads.data.planes import (
    VolumeCache,
    as_plane,
    as_volume,
    context_indices,
    plane,
)
from mmseg_heads.data.readers import (
    NIFTI_EXTENSIONS,
    extension_of,
    read_array,
    read_colour_array,
    read_nifti_geometry,
    read_shape,
)
from mmseg_heads.data.spec import DataSpec, ModalitySpec, TaskSpec
from mmseg_heads.data.splits import SLICE_SEPARATOR
from mmseg_heads.data.transforms import pad_to, round_up
from mmseg_heads.errors import UserError

Sample = dict  # {"images": {m: C×H×W}, "labels": {t: H×W}, "has_label": {t: bool}, "id": str, "size": (H, W)}


class MultiModalDataset(Dataset):
    """Reads the files of one split of a :class:`DataSpec`.

    Returns ``{"images": {modality: C×H×W float32}, "labels": {task: H×W int64},
    "has_label": {task: bool}, "id": str, "size": (H, W)}``. A sample without a label file for an
    optional task gets ``has_label=False`` and a label map of ``IGNORE_INDEX``.

    With a ``volume`` section, a sample is one 2-D slice of the case's volumes, with id
    ``"{case}#{slice}"``; ``cases`` lists the split's case ids and ``labelled`` (when the ``keep``
    rule or ``labelled_weight`` needed the labels) whether each slice has a foreground pixel.

    Args:
        spec: the data spec.
        split: name of one of its splits.
        transform: training augmentation and crop (``None`` for evaluation): a
            :class:`TrainTransform`, or any callable ``(images, labels, has_label, generator) ->
            (images, labels)`` (only a ``TrainTransform`` can leave augmentation to the device).

    An index may come with the seed of its augmentation, ``dataset[(index, seed)]`` (the training
    loader's order does this, so a sample's augmentation depends on the run's seed, the epoch and
    its place in the epoch only, not on the number of workers); a bare index draws its seed from
    torch's RNG.
    """

    def __init__(
        self, spec: DataSpec, split: str, *, transform: TrainTransform | Callable | None = None
    ):
        self.spec = spec
        self.split = split
        self.transform = transform
        self.cases = spec.split_ids(split)
        self._check_files_exist()
        self._cache = VolumeCache(spec.volume.cache if spec.volume is not None else 0)
        self.labelled: list[bool] | None = None
        if spec.volume is None:
            self.ids = list(self.cases)
        else:
            self.ids, self.labelled = self._slice_index()

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        # A worker starts with an empty cache rather than a pickled copy of the parent's volumes.
        state = self.__dict__.copy()
        state["_cache"] = VolumeCache(self._cache.capacity)
        return state

    def _check_files_exist(self) -> None:
        """Stat every required file up front so a missing one stops the run before training."""
        for sample_id in self.cases:
            for name in self.spec.modalities:
                path = self.spec.modality_file(name, sample_id)
                problem = missing_modality_file(path, sample_id, name, exists=path.is_file())
                if problem is not None:
                    raise problem.error(self.spec.path)
            for name, task in self.spec.tasks.items():
                path = self.spec.label_file(name, sample_id)
                problem = missing_label_file(path, sample_id, task, exists=path.is_file())
                if problem is not None:
                    raise problem.error(self.spec.path)

    # --- volumes -----------------------------------------------------------------------------
    def _case_files(self, case: str) -> dict[Path, str]:
        """``{file: field of the spec}`` of every file of a case that exists (a label file that
        several tasks share appears once)."""
        files = {
            self.spec.modality_file(m, case): f"modalities.{m}.files" for m in self.spec.modalities
        }
        for name in self.spec.tasks:
            path = self.spec.label_file(name, case)
            if path.is_file():
                files.setdefault(path, f"tasks.{name}.labels")
        return files

    def plane_spacing(self, case: str, task: str) -> tuple[float, ...] | None:
        """Voxel size of a case's ``task`` labels in the order of a stack of its planes: the slice
        axis first, then the plane's two axes (mm, from the NIfTI header); ``None`` for files
        without one (``.npy``)."""
        path = self.spec.label_file(task, case)
        if extension_of(path) not in NIFTI_EXTENSIONS:
            return None
        zooms = [float(z) for z in read_nifti_geometry(path).header.get_zooms()[:3]]
        axis = self.spec.volume.slice_axis
        return (zooms[axis], *(z for i, z in enumerate(zooms) if i != axis))

    def _case_depth(self, case: str) -> int:
        """Slices of a case, after checking that all its files are volumes on one grid."""
        shapes = {}
        for path, where in self._case_files(case).items():
            shape = read_shape(path)
            if len(shape) < 3:
                raise UserError(
                    f"{path} is 2-D (shape {shape}) but the `volume` section slices 3-D files "
                    "(remove `volume` for 2-D images)",
                    file=self.spec.path,
                    field=where,
                )
            shapes[path] = tuple(shape[:3])
        if len(set(shapes.values())) > 1:
            listing = ", ".join(f"{p.name} {'×'.join(map(str, s))}" for p, s in shapes.items())
            raise UserError(
                f"case {case!r}: volumes differ in grid size: {listing}", file=self.spec.path
            )
        return next(iter(shapes.values()))[self.spec.volume.slice_axis]

    def _labelled_slices(self, case: str, depth: int) -> np.ndarray:
        """Per slice: does any task's mapped label have a pixel that is neither class 0 nor ignore.

        Works on raw values: the raw values that some task maps to a foreground class are found
        once per label file (tasks often share one), then looked up per slice; this also checks
        every raw value of the volume has a class before training starts.
        """
        axis = self.spec.volume.slice_axis
        tasks_by_file: dict[Path, list[TaskSpec]] = {}
        for name, task in self.spec.tasks.items():
            path = self.spec.label_file(name, case)
            if path.is_file():
                tasks_by_file.setdefault(path, []).append(task)
        flags = np.zeros(depth, dtype=bool)
        for path, tasks in tasks_by_file.items():
            raw = as_volume(self._cache.get(case, path, read_array), path, self.spec.path)
            uniques, _ = unique_values(raw)
            foreground: set = set()
            for task in tasks:
                table = task.class_table(uniques, path)
                foreground.update(uniques[(table != 0) & (table != IGNORE_INDEX)].tolist())
            flags |= _slices_holding(raw, sorted(foreground), axis)
        return flags

    def _slice_index(self) -> tuple[list[str], list[bool] | None]:
        volume = self.spec.volume
        ids: list[str] = []
        labelled: list[bool] = []
        for case in self.cases:
            depth = self._case_depth(case)
            flags = self._labelled_slices(case, depth) if volume.needs_labels else None
            keep = range(depth) if volume.keep == "all" else keep_labelled(flags, volume.margin)
            for index in keep:
                ids.append(f"{case}{SLICE_SEPARATOR}{index}")
                labelled.append(bool(flags[index]) if flags is not None else True)
        if not ids:
            raise UserError(
                f"split {self.split!r}: none of its {len(self.cases)} cases has a labelled slice",
                file=self.spec.path,
                field="volume.keep",
            )
        return ids, (labelled if volume.needs_labels else None)

    def sample_weights(self) -> list[float] | None:
        """Relative draw weight of each sample for training, or ``None`` for uniform.

        A labelled slice weighs ``volume.labelled_weight``, any other 1; ``None`` when the spec
        slices no volumes, the weight is 1 or every kept slice is alike.
        """
        if self.labelled is None or len(set(self.labelled)) < 2:
            return None
        weight = self.spec.volume.labelled_weight
        return [weight if flag else 1.0 for flag in self.labelled]

    def _read_plane(
        self, path: Path, sample_id: str, context: int = 0, *, colour: bool = False
    ) -> list[np.ndarray]:
        """The 2-D arrays (``H×W`` or ``H×W×C``) of one sample in one file: its plane, or with
        ``context`` the planes of slices i-context … i+context (edges replicated). ``colour``:
        read a colour label file (a palette image gives its colours, not its indices)."""
        read = read_colour_array if colour else read_array
        case, index = self.spec.case_of(sample_id)
        if index is None:
            return [as_plane(read(path), path, self.spec.path)] * (2 * context + 1)
        volume = as_volume(self._cache.get(case, path, read), path, self.spec.path)
        axis = self.spec.volume.slice_axis
        indices = context_indices(index, volume.shape[axis], context)
        # A slice repeated at an edge is one array, prepared once by read_images.
        planes = {i: plane(volume, axis, i) for i in indices}
        return [planes[i] for i in indices]

    # --- samples -----------------------------------------------------------------------------
    def read_images(self, sample_id: str) -> dict[str, np.ndarray]:
        """Every modality's ``C×H×W`` input; with 2.5-D context, its neighbour slices' channels
        follow in slice order, each plane normalised on its own (as predict does)."""
        images = {}
        for name, modality in self.spec.modalities.items():
            path = self.spec.modality_file(name, sample_id)
            planes = self._read_plane(path, sample_id, self.spec.context)
            prepared: dict[int, np.ndarray] = {}  # by identity: a replicated edge slice once
            for one in planes:
                if id(one) not in prepared:
                    prepared[id(one)] = prepare_image(one, modality, path)
            images[name] = np.concatenate([prepared[id(one)] for one in planes])
        return images

    def read_labels(self, sample_id: str, size: tuple[int, int]) -> tuple[dict, dict]:
        labels, has_label = {}, {}
        for name, task in self.spec.tasks.items():
            path = self.spec.label_file(name, sample_id)
            if task.optional and not path.is_file():
                labels[name] = np.full(size, IGNORE_INDEX, dtype=np.int64)
                has_label[name] = False
                continue
            colour = task.label_format == "colour"
            raw = self._read_plane(path, sample_id, colour=colour)[0]
            labels[name] = task.map_labels(raw, path)
            has_label[name] = True
        return labels, has_label

    def _check_sizes(self, sample_id: str, images: dict, labels: dict) -> tuple[int, int]:
        sizes = [
            (f"modality {k}", v.shape[-2:], f"modalities.{k}.files") for k, v in images.items()
        ]
        sizes += [(f"task {k}", v.shape, f"tasks.{k}.labels") for k, v in labels.items()]
        problem = size_mismatch(sample_id, sizes)
        if problem is not None:
            raise problem.error(self.spec.path)
        return tuple(sizes[0][1])

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample_id = self.ids[index]
        images = self.read_images(sample_id)
        size = next(iter(images.values())).shape[-2:]
        labels, has_label = self.read_labels(sample_id, size)
        size = self._check_sizes(sample_id, images, labels)
        images = {k: torch.from_numpy(v) for k, v in images.items()}
        labels = {k: torch.from_numpy(v) for k, v in labels.items()}
        origin = None
        if self.transform is not None:
            if seed is None:
                seed = int(torch.randint(0, 2**62, ()))
            generator = torch.Generator().manual_seed(seed)
            # the window only, where the device augments the batch (a TrainTransform's option;
            # any other callable transforms the sample itself)
            if isinstance(self.transform, TrainTransform) and self.transform.on == "gpu":
                images, labels, origin = self.transform.window(images, labels, has_label, generator)
            else:
                images, labels = self.transform(images, labels, has_label, generator)
        sample = {
            "images": images,
            "labels": labels,
            "has_label": has_label,
            "id": sample_id,
            "size": tuple(int(s) for s in size),
        }
        if origin is not None:
            sample["origin"] = origin
        return sample


def prepare_image(plane: np.ndarray, modality: ModalitySpec, path: Path) -> np.ndarray:
    """One plane as read (``H×W`` or ``H×W×C``) -> ``C×H×W`` float32, clipped and normalised.

    The one place images become network input: training, evaluation and ``predict`` all use it.

    Raises:
        UserError: naming ``path``, when the channel count differs from the spec's.
    """
    array = plane[None] if plane.ndim == 2 else np.moveaxis(plane, -1, 0)
    problem = channel_mismatch(path, array.shape[0], modality)
    if problem is not None:
        raise problem.error(path)
    image = array.astype(np.float32)
    if modality.clip_percentiles is not None:
        image = clip_percentiles(image, *modality.clip_percentiles)
    return normalize(image, modality.normalize)


def keep_labelled(flags: np.ndarray, margin: int) -> list[int]:
    """Indices of the labelled slices and of ``margin`` slices on each side of each of them."""
    keep = np.zeros(len(flags), dtype=bool)
    for index in np.flatnonzero(flags):
        keep[max(0, index - margin) : index + margin + 1] = True
    return np.flatnonzero(keep).tolist()


def _slices_holding(raw: np.ndarray, values: list, axis: int) -> np.ndarray:
    """Per index along ``axis``: does that slice of ``raw`` hold any of ``values``."""
    others = tuple(a for a in range(raw.ndim) if a != axis)
    if not values:
        return np.zeros(raw.shape[axis], dtype=bool)
    if len(values) <= 8:  # a few comparisons beat np.isin's sort on a whole volume
        hits = np.zeros(raw.shape[axis], dtype=bool)
        for value in values:
            hits |= (raw == value).any(axis=others)
        return hits
    return np.isin(raw, values).any(axis=others)


#: Batches are padded to a multiple of this (the deepest stride of a depth-5 encoder).
PAD_MULTIPLE = 32


def collate(samples: list[Sample], multiple: int = PAD_MULTIPLE) -> dict:
    """Stack samples, padding each batch to a common size that is a multiple of ``multiple``."""
    height = round_up(
        max(s["images"][next(iter(s["images"]))].shape[-2] for s in samples), multiple
    )
    width = round_up(max(s["images"][next(iter(s["images"]))].shape[-1] for s in samples), multiple)
    padded = []
    for s in samples:
        images, labels = pad_to(
            {k: v.numpy() for k, v in s["images"].items()},
            {k: v.numpy() for k, v in s["labels"].items()},
            height,
            width,
        )
        padded.append((images, labels))
    first = samples[0]
    return {
        "images": {
            k: torch.stack([torch.from_numpy(p[0][k]) for p in padded]) for k in first["images"]
        },
        "labels": {
            k: torch.stack([torch.from_numpy(p[1][k]) for p in padded]) for k in first["labels"]
        },
        "has_label": {
            k: torch.tensor([s["has_label"][k] for s in samples]) for k in first["has_label"]
        },
        # The same, counted on the host: the loss skips a task with none without reading
        # has_label back from the GPU.
        "labelled": {k: sum(bool(s["has_label"][k]) for s in samples) for k in first["has_label"]},
        "id": [s["id"] for s in samples],
        "size": [s["size"] for s in samples],
    } | (
        # augment_on: gpu — where each sample's arrays start in its window
        {"origin": torch.tensor([s["origin"] for s in samples])} if "origin" in first else {}
    )
