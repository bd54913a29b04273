"""Writing predicted masks: palette PNGs, NIfTI on the input's grid, overlays.

Masks are written as palette PNGs of class indices (``DIR/<task>/<id>.png``, coloured by the task's
``colors`` in the data spec: :attr:`~mmseg_heads.data.spec.TaskSpec.palette`), or, for NIfTI input,
as ``DIR/<task>/<id>.nii.gz`` with the input's affine and grid (a volume's planes stacked back).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from mmseg_heads.atomic import refuse_foreign, write_atomic
from mmseg_heads.data.readers import NiftiGeometry
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.engine.predict_segment import Sample

# Every output file is encoded in memory, then written with write_atomic (temp file beside it,
# fsync, rename): a full disk is a WriteError naming the file, never a half file, and an older
# file of that name stays as it was. Encoding first also keeps the system's errno: PIL writes
# image data to a real file's descriptor from C and reports a failed write without it.
#: What marks a file as written by ``predict``: a PNG text chunk, the NIfTI header's ``descrip``;
#: an ``.npy`` header has no room for one, so its folder's :data:`NPY_LEDGER` lists them.
MARKER = "mmseg_heads predict"
#: ``{"writer": MARKER, "files": {name: sha256}}``: the ``.npy`` masks predict wrote in a folder.
NPY_LEDGER = ".mmseg_heads_predict.json"


def png_bytes(image: Image.Image) -> bytes:
    """The PNG file ``image.save(path)`` writes for a ``.png`` path, as bytes, marked as ours."""
    info = PngInfo()
    info.add_text("Software", MARKER)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def written_by_predict(path: Path) -> bool:
    """Whether ``path`` is a mask or overlay that ``predict`` wrote (it may then replace it)."""
    try:
        if path.suffix == ".png":
            with Image.open(path) as image:
                return image.info.get("Software") == MARKER
        if path.name.endswith((".nii", ".nii.gz")):
            import nibabel

            descrip = nibabel.load(str(path)).header["descrip"]
            return bytes(descrip).rstrip(b"\0").decode(errors="replace") == MARKER
        if path.suffix == ".npy":  # ours if the ledger lists it with these very bytes
            listed = _npy_ledger(path.parent)
            return listed is not None and listed.get(path.name) == _sha256(path.read_bytes())
    except Exception:  # unreadable: not ours
        return False
    return False


def check_replaceable(paths: list[Path], *, overwrite: bool) -> None:
    """Stop before writing over files ``predict`` did not write (unless ``overwrite``).

    Raises:
        UserError: naming the first such files and how to go on.
    """
    if not overwrite:
        refuse_foreign(
            paths, written_by_predict, "--out", writer="predict", overwrite="--overwrite"
        )


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


def write_npy_mask(mask: np.ndarray, path: Path) -> Path:
    """A class-index volume (the input's own axis order) as a uint8 ``.npy``, written atomically:
    a volume read from ``.npy`` comes back as one. Its name and SHA-256 go to the folder's
    :data:`NPY_LEDGER`, so that a later ``predict`` knows it may replace it."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(mask, dtype=np.uint8))
    data = buffer.getvalue()
    write_atomic(path, data)
    listed = _npy_ledger(path.parent)
    if listed is not None or not (path.parent / NPY_LEDGER).exists():
        # (a file of that name that is not our ledger stays as it is: the mask is then unlisted)
        listed = {**(listed or {}), path.name: _sha256(data)}
        ledger = {"writer": MARKER, "files": dict(sorted(listed.items()))}
        write_atomic(path.parent / NPY_LEDGER, json.dumps(ledger, indent=1) + "\n")
    return path


def _npy_ledger(folder: Path) -> dict[str, str] | None:
    """``{name: sha256}`` of the folder's ledger; None without one (or a file that is not one)."""
    try:
        ledger = json.loads((folder / NPY_LEDGER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(ledger, dict) or ledger.get("writer") != MARKER:
        return None
    files = ledger.get("files")
    return dict(files) if isinstance(files, dict) else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    image.header["descrip"] = MARKER.encode()
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


def mask_path(sample: Sample, folder: Path) -> Path:
    """``<id>.nii.gz`` for NIfTI input, ``<id>.npy`` for a volume of another format, else
    ``<id>.png``, in ``folder``."""
    if sample.geometry is not None:
        return folder / f"{sample.id}.nii.gz"
    return (
        folder / f"{sample.id}.npy"
        if sample.slice_axis is not None
        else folder / f"{sample.id}.png"
    )


def write_masks(
    sample: Sample,
    masks: dict[str, np.ndarray],
    spec: DataSpec,
    out: Path,
    *,
    with_overlay: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``out/<task>/<id>.png`` (``.nii.gz`` for NIfTI input, ``.npy`` for a volume of
    another format) per task; returns the paths.

    Each file is written atomically; the first one that cannot be written raises
    :class:`~mmseg_heads.errors.WriteError` (files written before it are complete). A file
    already there that ``predict`` did not write stops the sample before any of its files is
    written, unless ``overwrite``.

    Shape:
        ``masks``: ``{task: S×H×W}`` planes as :func:`segment` gives them.
    """
    paths = {task: mask_path(sample, out / task) for task in masks}
    overlays = {task: out / task / f"{sample.id}_overlay.png" for task in masks}
    check_replaceable([*paths.values(), *(overlays.values() if with_overlay else ())],
                      overwrite=overwrite)  # fmt: skip
    written = []
    for task, planes in masks.items():
        palette = spec.tasks[task].palette  # the spec's `colors`, default colours elsewhere
        path = paths[task]
        if sample.geometry is not None:
            grid = (
                planes[0]
                if sample.slice_axis is None
                else np.moveaxis(planes, 0, sample.slice_axis)
            )
            written.append(
                write_nifti_mask(grid, sample.geometry, spec.tasks[task].num_classes, path)
            )
        elif sample.slice_axis is not None:  # a volume of another format: one .npy volume
            written.append(write_npy_mask(np.moveaxis(planes, 0, sample.slice_axis), path))
        else:
            written.append(write_png_mask(planes[0], palette, path))
        if with_overlay:
            written.append(write_overlay(sample, planes, palette, overlays[task]))
    return written
