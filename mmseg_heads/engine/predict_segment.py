"""Reading an input's planes and segmenting them.

Images are read and normalised exactly as the dataset reads them for training (the same
:func:`~mmseg_heads.data.planes.file_planes`: a volume is cut into planes across the spec's
``volume.slice_axis``; a NIfTI volume without a ``volume`` section across axis 2); each 2-D plane
is padded (bottom and right, zeros) to a multiple of the model's largest stride, segmented as
:mod:`~mmseg_heads.engine.inference` says, cropped back and turned into class indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmseg_heads.data.checks import size_mismatch
from mmseg_heads.data.dataset import prepare_image
from mmseg_heads.data.planes import file_planes, with_context
from mmseg_heads.data.readers import (
    NIFTI_EXTENSIONS,
    NiftiGeometry,
    extension_of,
    read_array,
    read_nifti_geometry,
)
from mmseg_heads.data.spec import DataSpec, ModalitySpec
from mmseg_heads.data.transforms import round_up
from mmseg_heads.engine.inference import WHOLE_IMAGE, Inference, segment_planes
from mmseg_heads.engine.predict_inputs import INPUT_FIELD, PredictInput


@dataclass
class Sample:
    """One input, read and normalised.

    Attributes:
        id: sample id.
        images: ``{modality: S×C×H×W float32}``, ``S`` planes (1 for a 2-D image).
        raw: the first modality's planes as read, ``S×H×W`` or ``S×H×W×C`` (for overlays).
        geometry: the NIfTI geometry of the first modality's file, ``None`` for other formats.
        slice_axis: the array axis the planes were taken across, ``None`` for a 2-D image.
    """

    id: str
    images: dict[str, np.ndarray]
    raw: np.ndarray
    geometry: NiftiGeometry | None = None
    slice_axis: int | None = None


def is_nifti(path: Path) -> bool:
    return extension_of(path) in NIFTI_EXTENSIONS


def read_planes(path: Path, spec: DataSpec) -> tuple[np.ndarray, int | None]:
    """The 2-D planes of one file, read as the dataset reads it
    (:func:`~mmseg_heads.data.planes.file_planes`): ``(S×H×W(×C), axis cut across or None)``."""
    slice_axis = spec.volume.slice_axis if spec.volume is not None else None
    return file_planes(read_array(path), path, spec.path, slice_axis)


def prepare_planes(planes: np.ndarray, modality: ModalitySpec, path: Path) -> np.ndarray:
    """``S×H×W(×C)`` planes as read -> ``S×C×H×W`` float32, clipped and normalised per plane
    exactly as in training (:func:`~mmseg_heads.data.dataset.prepare_image`).

    Raises:
        UserError: the channel count differs from the spec's.
    """
    return np.stack([prepare_image(plane, modality, path) for plane in planes])


def read_sample(item: PredictInput, spec: DataSpec) -> Sample:
    """Read and normalise every modality of one input; all must have the same planes and size.

    Raises:
        UserError: unreadable files, wrong channel counts, or files that differ in size.
    """
    images, raw, axis = {}, None, None
    for name, path in item.files.items():
        planes, axis_here = read_planes(path, spec)
        if raw is None:
            raw, axis = planes, axis_here
        images[name] = with_context(
            prepare_planes(planes, spec.modalities[name], path), spec.context
        )
    sizes = [
        (str(item.files[name]), image.shape[:1] + image.shape[2:], INPUT_FIELD)
        for name, image in images.items()
    ]
    problem = size_mismatch(item.id, sizes, what="modalities differ in size (planes×H×W)")
    if problem is not None:
        raise problem.error(next(iter(item.files.values())))
    first = next(iter(item.files.values()))
    geometry = read_nifti_geometry(first) if is_nifti(first) else None
    return Sample(item.id, images, raw, geometry, axis)


def batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.inference_mode()
def segment(
    model: nn.Module,
    images: dict[str, np.ndarray],
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 8,
    inference: Inference = WHOLE_IMAGE,
) -> dict[str, np.ndarray]:
    """Class indices per task for ``S`` planes of any size.

    Planes are padded (bottom and right, zeros: the mean after normalisation, as ``collate``
    does) to a multiple of ``model.trunk.max_stride``, segmented ``batch_size`` at a time (or
    ``batch_size`` windows at a time) in eval mode as ``inference`` says, and cropped back.

    Shape:
        ``images``: ``{modality: S×C×H×W}``; returns ``{task: S×H×W uint8}``.
    """
    model.eval()
    first = next(iter(images.values()))
    count, (height, width) = first.shape[0], first.shape[-2:]
    multiple = model.trunk.max_stride
    pad = (0, round_up(width, multiple) - width, 0, round_up(height, multiple) - height)
    masks: dict[str, list[np.ndarray]] = {}
    for part in batches(count, batch_size):
        batch = {
            name: F.pad(torch.from_numpy(image[part]).to(device), pad)
            for name, image in images.items()
        }
        classes = segment_planes(
            model, batch, inference, precision=precision, device=device, batch_size=batch_size
        )
        for task, value in classes.items():
            labels = value[:, :height, :width].to(torch.uint8).cpu().numpy()
            masks.setdefault(task, []).append(labels)
    return {task: np.concatenate(parts) for task, parts in masks.items()}
