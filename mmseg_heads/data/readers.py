"""Image readers chosen by file extension, in a registry that other formats join.

Every reader returns a numpy array with the file's own dtype: ``H×W`` or ``H×W×C`` (channels
last) for 2-D images; NIfTI volumes come as stored, ``X×Y×Z`` (or ``X×Y×Z×C``), and the dataset
slices them (see the data spec's ``volume`` section). Labels keep their raw values (a palette PNG
gives its indices, never RGB colours); :func:`read_colour_array` reads the label files of a task
with ``label_format: colour``, where a palette PNG gives the colours its indices stand for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from mmseg_heads.errors import UserError
from mmseg_heads.registry import Registry

READERS: Registry[Callable[[Path], np.ndarray]] = Registry("reader")


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        # Palette ("P") images are index maps: np.asarray keeps the indices, which is what labels need.
        return np.asarray(image)


#: Pillow modes that colour labels are converted from, to the mode giving their RGB(A) colours.
_AS_COLOUR = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def _read_colours_with_pillow(path: Path) -> np.ndarray:
    """``H×W×3`` (or ``H×W×4``) colours of an image; grey images stay ``H×W`` (not colours)."""
    from PIL import Image

    with Image.open(path) as image:
        mode = _AS_COLOUR.get(image.mode)
        if image.mode == "P" and "transparency" in image.info:
            mode = "RGBA"  # a transparent palette entry is no colour: alpha < 255 shows it
        return np.asarray(image.convert(mode) if mode else image)


#: Formats read as one 2-D image: never a volume to slice (a multi-page TIFF gives its first page).
PLANAR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

for _ext in PLANAR_EXTENSIONS:
    READERS.register(_ext)(_read_with_pillow)


@READERS.register(".npy")
def _read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def _nibabel(path: Path) -> ModuleType:
    """Import nibabel on first use; its absence is the user's to fix, with the command that does."""
    try:
        import nibabel
    except ImportError as exc:
        raise UserError(
            'reading NIfTI needs nibabel: pip install "mmseg-heads[nifti]"', file=path
        ) from exc
    return nibabel


def _read_nifti(path: Path) -> np.ndarray:
    """The voxel array as stored (``X×Y×Z``), in the file's dtype (int16, uint8, float, …).

    ``dataobj`` keeps the on-disk dtype; only a header with an intensity scaling
    (``scl_slope``/``scl_inter``) turns it into floats, as the NIfTI standard says it must.
    """
    image = _nibabel(path).load(str(path))
    array = np.asanyarray(image.dataobj)
    return np.asarray(array)


for _ext in NIFTI_EXTENSIONS:
    READERS.register(_ext)(_read_nifti)


@dataclass(frozen=True)
class NiftiGeometry:
    """Where a NIfTI volume sits in space: what a mask written for it must carry over.

    Attributes:
        affine: ``4×4`` voxel-to-world matrix (the best one nibabel finds: sform, else qform).
        shape: the voxel grid, e.g. ``(X, Y, Z)``.
        header: the nibabel header (zooms, qform/sform codes, units) to copy into an output file.
    """

    affine: np.ndarray
    shape: tuple[int, ...]
    header: object


def read_nifti_geometry(path: str | Path) -> NiftiGeometry:
    """Affine, grid shape and header of a NIfTI file, without decoding its voxels.

    Raises:
        UserError: the file is missing, not NIfTI, or nibabel is not installed.
    """
    path = Path(path)
    if extension_of(path) not in NIFTI_EXTENSIONS:
        raise UserError(f"not a NIfTI file (expected {' or '.join(NIFTI_EXTENSIONS)})", file=path)
    if not path.is_file():
        raise UserError("file not found", file=path)
    nibabel = _nibabel(path)
    try:
        image = nibabel.load(str(path))
    except Exception as exc:
        raise UserError(
            f"cannot read NIfTI header ({type(exc).__name__}: {exc})", file=path
        ) from exc
    return NiftiGeometry(
        affine=np.asarray(image.affine), shape=tuple(image.shape), header=image.header.copy()
    )


def read_shape(path: str | Path) -> tuple[int, ...]:
    """The array shape of a file, from its header where the format has one (NIfTI, ``.npy``)."""
    path = Path(path)
    ext = extension_of(path)
    if ext in NIFTI_EXTENSIONS:
        return read_nifti_geometry(path).shape
    if ext == ".npy" and path.is_file():
        try:
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        except Exception as exc:
            raise UserError(
                f"cannot decode .npy file ({type(exc).__name__}: {exc})", file=path
            ) from exc
    return tuple(read_array(path).shape)


def extension_of(path: str | Path) -> str:
    """The registry key of a path: ``.nii.gz`` counts as one extension."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def read_array(path: str | Path) -> np.ndarray:
    """Read an image or label file by its extension; a user error names the file when it fails."""
    path = Path(path)
    return _decode(path, _reader_of(path))


def read_colour_array(path: str | Path) -> np.ndarray:
    """Read a colour label file: as :func:`read_array`, but an image Pillow reads gives its
    colours, ``H×W×3`` (``H×W×4`` with alpha), a palette image included (its indices stand for
    colours here); a grey image stays ``H×W``, for the caller to refuse."""
    path = Path(path)
    reader = _reader_of(path)
    return _decode(path, _read_colours_with_pillow if reader is _read_with_pillow else reader)


def _reader_of(path: Path) -> Callable[[Path], np.ndarray]:
    """The registered reader of ``path``'s extension; a user error names the file when none is."""
    ext = extension_of(path)
    if ext not in READERS:
        raise UserError(
            f"no reader for {ext or 'files without an extension'!r}; supported: {', '.join(READERS.names())}",
            file=path,
        )
    return READERS.get(ext)


def _decode(path: Path, reader: Callable[[Path], np.ndarray]) -> np.ndarray:
    """``reader(path)``; a missing, corrupt or truncated file is a user error naming it."""
    if not path.is_file():
        raise UserError("file not found", file=path)
    try:
        return reader(path)
    except UserError:
        raise
    except Exception as exc:  # a corrupt or truncated file is the user's problem, not ours
        raise UserError(
            f"cannot decode {extension_of(path)} file ({type(exc).__name__}: {exc})", file=path
        ) from exc
