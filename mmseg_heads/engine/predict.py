"""Predict masks for files a data spec's patterns describe: one mask per task per input.

An input is found as training finds it: each modality's ``files`` pattern (``"{id}/{id}_T2.nii.gz"``)
becomes a regular expression with ``{id}`` as a named group, matched against the end of a path.
The match gives the sample id and the root the pattern is relative to, and the other modalities'
files follow from their patterns under that root. Images are read and normalised exactly as the
dataset does for training; each 2-D plane is padded (bottom and right, zeros) to a multiple of the
model's largest stride, segmented, cropped back and turned into class indices.

Masks are written as palette PNGs of class indices (``DIR/<task>/<id>.png``, coloured by the task's
``colors`` in the data spec: :attr:`~mmseg_heads.data.spec.TaskSpec.palette`), or, for NIfTI input,
as ``DIR/<task>/<id>.nii.gz`` with the input's affine and grid (3-D volumes are segmented slice by
slice along the spec's ``volume.slice_axis``, 2 by default, and stacked back). Every file is
encoded in memory and written atomically (:func:`mmseg_heads.atomic.write_atomic`).
"""

from __future__ import annotations

import gzip
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mmseg_heads.atomic import write_atomic
from mmseg_heads.data.dataset import prepare_image, with_context
from mmseg_heads.data.readers import (
    NIFTI_EXTENSIONS,
    NiftiGeometry,
    extension_of,
    read_array,
    read_nifti_geometry,
)
from mmseg_heads.data.spec import DataSpec, ModalitySpec
from mmseg_heads.data.transforms import round_up
from mmseg_heads.engine.checkpoint import load_checkpoint, resolve_checkpoint
from mmseg_heads.engine.evaluate import (
    check_same_tasks,
    load_external_spec,
    load_run,
    spec_from_checkpoint,
)
from mmseg_heads.engine.precision import autocast, resolve_precision
from mmseg_heads.errors import UserError
from mmseg_heads.metrics.functional import predicted_classes

log = logging.getLogger(__name__)

#: Field name used in errors about positional inputs.
INPUT_FIELD = "INPUT"
MODALITY_FIELD = "--modality"


@dataclass(frozen=True)
class PredictInput:
    """One sample to segment.

    Attributes:
        id: sample id; names the output files.
        files: ``{modality: file}``; a modality left out is missing (only with ``allow_missing``).
    """

    id: str
    files: dict[str, Path]


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


# --- matching inputs to modalities --------------------------------------------------------------
def pattern_regex(pattern: str) -> re.Pattern:
    """A spec pattern as a regex matched at the end of a POSIX path.

    ``{id}`` becomes the named group ``id`` (no ``/`` inside; a second ``{id}`` must repeat it);
    group ``rel`` is the part of the path the pattern covers, so the root is what precedes it.
    """
    head, _, tail = pattern.partition("{id}")
    tail_regex = re.escape(tail).replace(re.escape("{id}"), r"(?P=id)")
    return re.compile(rf"(?:^|/)(?P<rel>{re.escape(head)}(?P<id>[^/]+?){tail_regex})$")


def _literal_length(pattern: str) -> int:
    return len(pattern.replace("{id}", ""))


def match_pattern(path: Path, pattern: str) -> tuple[str, Path] | None:
    """``(id, root)`` when ``path`` ends with ``pattern``, else ``None``."""
    text = path.as_posix()
    match = pattern_regex(pattern).search(text)
    if match is None:
        return None
    root = text[: match.start("rel")] or "."
    return match.group("id"), Path(root)


def file_stem(path: Path) -> str:
    """A file name without its extension (``.nii.gz`` counts as one)."""
    name = path.name
    ext = extension_of(path)
    return name[: -len(ext)] if ext and name.lower().endswith(ext) else name


def match_input(path: Path, spec: DataSpec) -> tuple[str, str, Path]:
    """``(modality, id, root)`` of one input file, by the spec's ``files`` patterns.

    Several matching patterns: the most specific (most literal characters) wins. A spec with one
    modality takes any file, its id being the file name without extension.

    Raises:
        UserError: the path matches no pattern, or two equally specific ones.
    """
    matches = []
    for name, modality in spec.modalities.items():
        found = match_pattern(path, modality.files)
        if found is not None:
            matches.append((_literal_length(modality.files), name, *found))
    if not matches:
        if len(spec.modalities) == 1:
            return next(iter(spec.modalities)), file_stem(path), path.parent
        patterns = ", ".join(f"{n}: {m.files!r}" for n, m in spec.modalities.items())
        raise UserError(
            f"matches none of the data spec's modality patterns ({patterns}); name each file "
            "with --modality NAME=PATH instead",
            file=path,
            field=INPUT_FIELD,
        )
    matches.sort(key=lambda m: -m[0])
    if len(matches) > 1 and matches[0][0] == matches[1][0]:
        names = " and ".join(repr(m[1]) for m in matches[:2])
        raise UserError(
            f"matches the patterns of {names} alike; use --modality NAME=PATH",
            file=path,
            field=INPUT_FIELD,
        )
    _, name, sample_id, root = matches[0]
    return name, sample_id, root


def companion_files(
    spec: DataSpec, sample_id: str, root: Path, given: dict[str, Path], *, allow_missing: bool
) -> dict[str, Path]:
    """Every modality's file for ``sample_id`` under ``root``; ``given`` files are kept as they are.

    Raises:
        UserError: a modality's file does not exist (unless ``allow_missing``), naming the file
            and the spec field whose pattern gave it.
    """
    files = {}
    for name, modality in spec.modalities.items():
        path = given.get(name, root / modality.files.format(id=sample_id))
        if path.is_file():
            files[name] = path
        elif not allow_missing:
            raise UserError(
                f"modality {name!r} of id {sample_id!r} not found (pattern "
                f"{modality.files!r} of {spec.path}); give it with --modality {name}=PATH, "
                "or pass --allow-missing to segment without it",
                file=path,
                field=f"modalities.{name}.files",
            )
    if not files:
        raise UserError(f"no modality file found for id {sample_id!r}", field=INPUT_FIELD)
    return files


def folder_input_message(folder: Path, spec: DataSpec) -> str:
    """What to do about a folder given as an ``INPUT``: name its files (a shell glob does)."""
    first = next(iter(spec.modalities.values()))
    pattern = Path(first.files)
    # A data root given as the folder: its files sit in the pattern's folder (`optical/{id}.png`).
    inner = pattern.parent if "{id}" not in str(pattern.parent) else Path()
    where = folder / inner if (folder / inner).is_dir() else folder
    glob = f"{where}/*{extension_of(pattern) or '.png'}"
    return (
        f"is a folder; INPUT takes image files, not folders: give the files, e.g. with a shell "
        f"glob: {glob}"
    )


def inputs_from_paths(
    paths: list[Path],
    spec: DataSpec,
    *,
    given: dict[str, Path] | None = None,
    allow_missing: bool = False,
) -> list[PredictInput]:
    """One :class:`PredictInput` per distinct sample among ``paths`` (in their order).

    ``given`` files (from ``--modality``) replace the pattern's file of their modality in every
    sample.

    Raises:
        UserError: a path is missing or matches no pattern, a companion file is missing, or two
            inputs from different folders share an id (their masks would overwrite each other).
    """
    samples: dict[str, PredictInput] = {}
    for path in paths:
        if path.is_dir():
            raise UserError(folder_input_message(path, spec), file=path, field=INPUT_FIELD)
        if not path.is_file():
            raise UserError("input file not found", file=path, field=INPUT_FIELD)
        modality, sample_id, root = match_input(path, spec)
        files = companion_files(
            spec, sample_id, root, {modality: path} | (given or {}), allow_missing=allow_missing
        )
        previous = samples.get(sample_id)
        if previous is not None and previous.files != files:
            raise UserError(
                f"id {sample_id!r} also comes from {next(iter(previous.files.values()))}: their "
                "masks would overwrite each other; predict them into separate --out folders",
                file=path,
                field=INPUT_FIELD,
            )
        samples[sample_id] = PredictInput(sample_id, files)
    return list(samples.values())


def parse_modality_args(pairs: list[str], spec: DataSpec) -> dict[str, Path]:
    """``["optical=a.png", …]`` -> ``{"optical": Path("a.png"), …}``, checked against the spec.

    Raises:
        UserError: a pair without ``=``, an unknown or repeated modality, or a missing file.
    """
    files: dict[str, Path] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise UserError(f"expected NAME=PATH, got {pair!r}", field=MODALITY_FIELD)
        if name not in spec.modalities:
            raise UserError(
                f"{name!r} is not a modality of this model ({', '.join(spec.modalities)})",
                field=MODALITY_FIELD,
            )
        if name in files:
            raise UserError(f"modality {name!r} given twice", field=MODALITY_FIELD)
        path = Path(value)
        if path.is_dir():
            raise UserError(
                f"is a folder; --modality {name}=PATH takes one file of modality {name!r}",
                file=path,
                field=MODALITY_FIELD,
            )
        if not path.is_file():
            raise UserError(f"file of modality {name!r} not found", file=path, field=MODALITY_FIELD)
        files[name] = path
    return files


def explicit_input(
    pairs: list[str], spec: DataSpec, *, allow_missing: bool = False
) -> PredictInput:
    """The one sample ``--modality NAME=PATH …`` describes.

    Its id comes from the first file's match with its modality's pattern, else from its name.

    Raises:
        UserError: as :func:`parse_modality_args`, or a modality left out (unless
            ``allow_missing``).
    """
    files = parse_modality_args(pairs, spec)
    missing = [m for m in spec.modalities if m not in files]
    if missing and not allow_missing:
        raise UserError(
            f"no file for modality {', '.join(map(repr, missing))}: add "
            + " ".join(f"--modality {m}=PATH" for m in missing)
            + " (or --allow-missing to segment without it)",
            field=MODALITY_FIELD,
        )
    name, path = next(iter(files.items()))
    found = match_pattern(path, spec.modalities[name].files)
    sample_id = found[0] if found is not None else file_stem(path)
    return PredictInput(sample_id, {m: files[m] for m in spec.modalities if m in files})


# --- reading ------------------------------------------------------------------------------------
def is_nifti(path: Path) -> bool:
    return extension_of(path) in NIFTI_EXTENSIONS


def read_planes(path: Path, slice_axis: int) -> tuple[np.ndarray, int | None]:
    """The 2-D planes of one file: ``(S×H×W or S×H×W×C array, axis they were taken across)``.

    A NIfTI file with 3 or 4 dimensions (``X×Y×Z`` or ``X×Y×Z×C``; trailing length-1 axes are
    dropped) is a volume cut across ``slice_axis``; anything else is one plane (axis ``None``).

    Raises:
        UserError: a NIfTI array with more dimensions.
    """
    array = read_array(path)
    if not is_nifti(path):
        return array[None], None
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return array[None], None
    if array.ndim not in (3, 4):
        raise UserError(
            f"shape {array.shape}: expected a 2-D image or an X×Y×Z(×C) volume", file=path
        )
    return np.ascontiguousarray(np.moveaxis(array, slice_axis, 0)), slice_axis


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
    slice_axis = spec.volume.slice_axis if spec.volume is not None else 2
    images, raw, axis = {}, None, None
    for name, path in item.files.items():
        planes, axis_here = read_planes(path, slice_axis)
        if raw is None:
            raw, axis = planes, axis_here
        images[name] = with_context(
            prepare_planes(planes, spec.modalities[name], path), spec.context
        )
    shapes = {name: image.shape[:1] + image.shape[2:] for name, image in images.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{item.files[n]} {'×'.join(map(str, s))}" for n, s in shapes.items())
        raise UserError(
            f"id {item.id!r}: modalities differ in size (planes×H×W): {listing}",
            file=next(iter(item.files.values())),
            field=INPUT_FIELD,
        )
    first = next(iter(item.files.values()))
    geometry = read_nifti_geometry(first) if is_nifti(first) else None
    return Sample(item.id, images, raw, geometry, axis)


# --- the model ----------------------------------------------------------------------------------
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
) -> dict[str, np.ndarray]:
    """Class indices per task for ``S`` planes of any size.

    Planes are padded (bottom and right, zeros: the mean after normalisation, as ``collate``
    does) to a multiple of ``model.trunk.max_stride``, segmented ``batch_size`` at a time in
    eval mode, cropped back and arg-maxed.

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
        with autocast(precision, device):
            logits = model(batch)
        for task, value in logits.items():
            labels = predicted_classes(value[..., :height, :width]).to(torch.uint8).cpu().numpy()
            masks.setdefault(task, []).append(labels)
    return {task: np.concatenate(parts) for task, parts in masks.items()}


# --- writing ------------------------------------------------------------------------------------
# Every output file is encoded in memory, then written with write_atomic (temp file beside it,
# fsync, rename): a full disk is a WriteError naming the file, never a half file, and an older
# file of that name stays as it was. Encoding first also keeps the system's errno: PIL writes
# image data to a real file's descriptor from C and reports a failed write without it.
def png_bytes(image: Image.Image) -> bytes:
    """The PNG file ``image.save(path)`` writes for a ``.png`` path, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_mask_image(mask: np.ndarray, palette: list[tuple[int, int, int]]) -> Image.Image:
    """An ``H×W`` class-index map as a palette ("P") image: readers get the indices back."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "P")
    image.putpalette([channel for colour in palette for channel in colour])
    return image


def write_png_mask(mask: np.ndarray, palette: list[tuple[int, int, int]], path: Path) -> Path:
    """An ``H×W`` class-index map as a palette PNG, written atomically.

    Raises:
        WriteError: the file could not be written (a previous ``path`` is unchanged).
    """
    write_atomic(path, png_bytes(png_mask_image(mask, palette)))
    return path


def nifti_mask_image(mask: np.ndarray, geometry: NiftiGeometry, num_classes: int):
    """A class-index map on the input's grid, with its affine and header, as a uint8 NIfTI image
    (``Nifti2Image`` for a NIfTI-2 input, else ``Nifti1Image``)."""
    import nibabel

    if mask.size == int(np.prod(geometry.shape)):  # put back trailing length-1 axes
        mask = mask.reshape(geometry.shape)
    header = geometry.header.copy()
    kind = nibabel.Nifti2Image if isinstance(header, nibabel.Nifti2Header) else nibabel.Nifti1Image
    image = kind(np.asarray(mask, dtype=np.uint8), geometry.affine, header=header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, max(num_classes - 1, 1)
    return image


def nifti_bytes(image, path: Path) -> bytes:
    """The file ``nibabel.save(image, path)`` writes, as bytes: the single-file NIfTI, gzipped for
    a ``.gz`` name as nibabel gzips (its compression level, no file name, mtime 0)."""
    from nibabel.openers import Opener

    data = image.to_bytes()
    if not path.name.lower().endswith(".gz"):
        return data
    buffer = io.BytesIO()
    level = Opener.default_compresslevel
    with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=buffer, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def write_nifti_mask(
    mask: np.ndarray, geometry: NiftiGeometry, num_classes: int, path: Path
) -> Path:
    """A class-index map on the input's grid, with its affine and header, as uint8 NIfTI
    (``.nii.gz``: gzipped), written atomically.

    Raises:
        WriteError: the file could not be written (a previous ``path`` is unchanged).
    """
    image = nifti_mask_image(mask, geometry, num_classes)
    write_atomic(path, nifti_bytes(image, path))
    return path


def display_rgb(plane: np.ndarray) -> np.ndarray:
    """An ``H×W`` or ``H×W×C`` plane as ``H×W×3`` uint8, stretched between its 1st and 99th
    percentiles; RGB stays RGB, anything else shows its first channel as grey."""
    image = plane.astype(np.float32)
    if image.ndim == 3:
        image = image[..., :3] if image.shape[-1] >= 3 else image[..., 0]
    low, high = np.percentile(image, [1, 99])
    image = np.clip((image - low) / max(float(high - low), 1e-6), 0, 1) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image.astype(np.uint8)


def overlay(
    plane: np.ndarray, mask: np.ndarray, palette: list[tuple[int, int, int]], alpha: float = 0.5
) -> np.ndarray:
    """The plane with each non-background pixel blended with its class colour (``H×W×3``)."""
    image = display_rgb(plane).astype(np.float32)
    colours = np.asarray(palette, dtype=np.float32)[mask]
    foreground = (mask > 0)[..., None]
    blended = np.where(foreground, (1 - alpha) * image + alpha * colours, image)
    return blended.round().astype(np.uint8)


def write_overlay(
    sample: Sample, mask: np.ndarray, palette: list[tuple[int, int, int]], path: Path
) -> Path:
    """An overlay PNG, written atomically; for a volume, of the plane with the most foreground.

    Raises:
        WriteError: the file could not be written (a previous ``path`` is unchanged).
    """
    index = int(np.argmax((mask > 0).reshape(len(mask), -1).sum(1))) if len(mask) > 1 else 0
    image = Image.fromarray(overlay(sample.raw[index], mask[index], palette), "RGB")
    write_atomic(path, png_bytes(image))
    return path


def write_masks(
    sample: Sample,
    masks: dict[str, np.ndarray],
    spec: DataSpec,
    out: Path,
    *,
    with_overlay: bool = False,
) -> list[Path]:
    """Write ``out/<task>/<id>.png`` (or ``.nii.gz`` for NIfTI input) per task; returns paths.

    Each file is written atomically; the first one that cannot be written raises
    :class:`~mmseg_heads.errors.WriteError` (files written before it are complete).

    Shape:
        ``masks``: ``{task: S×H×W}`` planes as :func:`segment` gives them.
    """
    written = []
    for task, planes in masks.items():
        classes = spec.tasks[task].num_classes
        palette = spec.tasks[task].palette  # the spec's `colors`, default colours elsewhere
        folder = out / task
        if sample.geometry is not None:
            grid = (
                planes[0]
                if sample.slice_axis is None
                else np.moveaxis(planes, 0, sample.slice_axis)
            )
            written.append(
                write_nifti_mask(grid, sample.geometry, classes, folder / f"{sample.id}.nii.gz")
            )
        else:
            written.append(write_png_mask(planes[0], palette, folder / f"{sample.id}.png"))
        if with_overlay:
            written.append(
                write_overlay(sample, planes, palette, folder / f"{sample.id}_overlay.png")
            )
    return written


# --- the command --------------------------------------------------------------------------------
def resolve_device(name: str | None) -> torch.device:
    """``None`` -> CUDA where there is one, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"not a device: {exc}", field="--device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine", field="--device")
    return device


def run_spec(checkpoint: str | Path, data: str | Path | None = None) -> DataSpec:
    """The data spec a prediction reads inputs with: ``data`` (checked to have the checkpoint's
    modalities and tasks), else the checkpoint's own. Reads no weights into a model, so that
    input errors show before the model is built."""
    path = resolve_checkpoint(checkpoint)
    spec = spec_from_checkpoint(load_checkpoint(path))
    if data is None:
        return spec
    external = load_external_spec(data)
    check_same_tasks(external, spec, path)
    return external


def resolve_inputs(
    spec: DataSpec,
    inputs: list[str | Path],
    modality_files: list[str] | None,
    *,
    allow_missing: bool,
) -> list[PredictInput]:
    """The samples the command line describes (see :func:`predict`).

    Raises:
        UserError: nothing to predict, or a problem with one of the inputs.
    """
    if inputs:
        given = parse_modality_args(modality_files or [], spec)
        return inputs_from_paths(
            [Path(p) for p in inputs], spec, given=given, allow_missing=allow_missing
        )
    if modality_files:
        return [explicit_input(modality_files, spec, allow_missing=allow_missing)]
    raise UserError(
        "nothing to predict: give INPUT files or --modality NAME=PATH", field=INPUT_FIELD
    )


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    *,
    modality_files: list[str] | None = None,
    data: str | Path | None = None,
    overlay: bool = False,
    allow_missing: bool = False,
    batch_size: int = 8,
    device: str | None = None,
) -> list[Path]:
    """Segment every input with a checkpoint and write its masks; returns the files written.

    Args:
        checkpoint: a run directory (its ``checkpoints/best.pt``) or a checkpoint file.
        inputs: files of any modality; each is matched to its modality and id by the patterns.
        out: output folder; masks go to ``out/<task>/<id>.png`` or ``.nii.gz``.
        modality_files: ``["NAME=PATH", …]``: without ``inputs``, the files of one sample;
            with ``inputs``, files that replace their modality's in every input's sample.
        data: another data spec with the same modalities and tasks, whose file patterns and
            normalisation are used instead of the checkpoint's (another layout on disk).
        overlay: also write ``out/<task>/<id>_overlay.png``.
        allow_missing: segment without a modality whose file is missing (the trunk leaves it
            out of the fusion) instead of failing.
        batch_size: planes per forward pass (the slices of a volume).
        device: ``cpu``, ``cuda``, ``cuda:1``…; default CUDA where available.

    Raises:
        UserError: a problem with the checkpoint, the inputs or the arguments.
        WriteError: an output file could not be written (a full disk, no permission); the file
            is left as it was before, and no temp file stays behind.
    """
    spec = run_spec(checkpoint, data)
    items = resolve_inputs(spec, inputs, modality_files, allow_missing=allow_missing)
    target = resolve_device(device)
    config, model, _, _ = load_run(checkpoint, data)
    precision = resolve_precision(config.train["precision"], target)
    model = model.to(target).eval()
    written: list[Path] = []
    for item in items:
        sample = read_sample(item, spec)
        masks = segment(
            model, sample.images, device=target, precision=precision, batch_size=batch_size
        )
        written += write_masks(sample, masks, spec, Path(out), with_overlay=overlay)
        log.debug("predicted %s from %s", item.id, item.files)
    return written
