"""Image readers chosen by file extension, in a registry that other formats join.

Every reader returns a numpy array ``H×W`` or ``H×W×C`` (channels last) with the file's own dtype:
labels keep their raw values (a palette PNG gives its indices, never RGB colours).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmseg_heads.errors import UserError
from mmseg_heads.registry import Registry

READERS: Registry[Callable[[Path], np.ndarray]] = Registry("reader")


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        # Palette ("P") images are index maps: np.asarray keeps the indices, which is what labels need.
        return np.asarray(image)


for _ext in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
    READERS.register(_ext)(_read_with_pillow)


@READERS.register(".npy")
def _read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def extension_of(path: str | Path) -> str:
    """The registry key of a path: ``.nii.gz`` counts as one extension."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def read_array(path: str | Path) -> np.ndarray:
    """Read an image or label file by its extension; a user error names the file when it fails."""
    path = Path(path)
    ext = extension_of(path)
    if ext not in READERS:
        raise UserError(
            f"no reader for {ext or 'files without an extension'!r}; supported: {', '.join(READERS.names())}",
            file=path,
        )
    if not path.is_file():
        raise UserError("file not found", file=path)
    try:
        return READERS.get(ext)(path)
    except UserError:
        raise
    except Exception as exc:  # a corrupt or truncated file is the user's problem, not ours
        raise UserError(
            f"cannot decode {ext} file ({type(exc).__name__}: {exc})", file=path
        ) from exc
