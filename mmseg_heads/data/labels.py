"""Label mapping: the raw values of a label file -> class indices of a task.

A task maps raw values by its ``values`` table (key ``other`` catches the rest), by a
``threshold`` (binary masks), or as the class indices themselves; its ``ignore`` values, and
``values`` entries set to ``ignore``, become :data:`IGNORE_INDEX`. A raw value with no class is an
error naming the file, never a silent remap to ignore. :class:`~mmseg_heads.data.spec.TaskSpec`'s
methods (``map_labels``, ``map_values``, ``class_table``, ``unmapped_hint``) call these functions.

A task with ``label_format: colour`` reads RGB label images instead (VOC or Cityscapes colour
masks, annotation tools' exports): each pixel's colour is packed into one number
(:func:`pack_colours`) and mapped through the task's ``colors`` (``ignore_colors`` become
:data:`IGNORE_INDEX`); a colour of no class is an error as a raw value of no class is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmseg_heads.data.readers import extension_of
from mmseg_heads.errors import UserError
from mmseg_heads.palette import RGB, as_rgb

if TYPE_CHECKING:
    from mmseg_heads.data.spec import TaskSpec

#: Label value of pixels that no loss and no metric sees (padding, ``ignore`` raw values).
IGNORE_INDEX = 255
#: Lossy label formats: their compression smears class edges into values of no class.
JPEG_EXTENSIONS = (".jpg", ".jpeg")
#: Integer label arrays whose values span less than this use a lookup table instead of a sort.
_DENSE_RANGE = 1 << 16
#: How a task's label files hold classes: raw values (``index``) or RGB colours (``colour``).
LABEL_FORMATS = ("index", "colour")
#: The packed colour (see :func:`pack_colours`) of a pixel that is not fully opaque: no class's.
TRANSLUCENT = -1
#: Colours named in one message; the rest are counted.
_COLOURS_SHOWN = 10


def map_labels(task: TaskSpec, raw: np.ndarray, file: str | Path) -> np.ndarray:
    """Raw label values of one 2-D label image -> class indices (``IGNORE_INDEX`` for ignored
    pixels).

    Raises a :class:`UserError` naming ``file`` for a colour image, a value with no mapping or
    a class index out of range: never a silent remap to ignore. With ``label_format: colour``,
    see :func:`map_colours`.
    """
    if task.label_format == "colour":
        return map_colours(task, raw, file)
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raise UserError(
            f"task {task.name!r}: label image has {raw.shape[2]} colour channels; labels must be "
            "single-channel index maps (save a palette or grayscale PNG), or colour masks read "
            "with `label_format: colour`",
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
    if task.label_format == "colour":
        return colour_table(task, uniques, file)
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
    colour = task.label_format == "colour"
    what, key = ("colours", "colors") if colour else ("values", "values")
    if any(extension_of(f) in JPEG_EXTENSIONS for f in files):
        return (
            f"the label files are JPEG, whose lossy compression creates in-between {what} "
            "along class edges: save the labels in a lossless format (PNG), from the original "
            f"annotation (mapping these {what} with `{key}` would keep wrong pixels)"
        )
    if colour:
        return "add them to `colors` (one class each) or to `ignore_colors`"
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


# --- colour labels -----------------------------------------------------------------------------


def is_colour_image(raw: np.ndarray) -> bool:
    """Whether an array read from a label file is an ``H×W×3`` (RGB) or ``H×W×4`` (RGBA) image."""
    return raw.ndim == 3 and raw.shape[2] in (3, 4)


def pack_rgb(colour: RGB) -> int:
    """``(r, g, b)`` -> ``r<<16 | g<<8 | b``, the number :func:`pack_colours` gives its pixels."""
    r, g, b = colour
    return (r << 16) | (g << 8) | b


def pack_colours(raw: np.ndarray, file: str | Path) -> np.ndarray:
    """An ``H×W×3`` (RGB) or ``H×W×4`` (RGBA) image of 8-bit colours -> ``H×W`` int32 numbers
    ``r<<16 | g<<8 | b``.

    One number per pixel lets one ``np.unique`` (or a bincount) find a file's colours: sorting
    rows of three would be several times slower. A pixel with alpha < 255 packs to
    :data:`TRANSLUCENT`, so that an opaque RGBA file packs exactly as its RGB would.

    Raises:
        UserError: naming ``file``, for values that are not whole numbers 0..255 (a ``.npy`` file
            of other numbers).
    """
    whole = np.issubdtype(raw.dtype, np.integer)
    if raw.dtype != np.uint8 and raw.size and not (whole and 0 <= raw.min() <= raw.max() <= 255):
        raise UserError(
            f"colour label values must be whole numbers 0..255 (8-bit RGB); this {raw.dtype} "
            "array holds others",
            file=file,
        )
    packed = raw[..., 0].astype(np.int32) << 16
    packed |= raw[..., 1].astype(np.int32) << 8
    packed |= raw[..., 2].astype(np.int32)
    if raw.shape[2] == 4:
        packed[raw[..., 3] != 255] = TRANSLUCENT
    return packed


def colour_name(packed: int) -> str:
    """A packed colour as users write it: ``(12, 250, 3)`` (``alpha < 255`` for :data:`TRANSLUCENT`)."""
    if packed == TRANSLUCENT:
        return "alpha < 255"
    return f"({packed >> 16 & 255}, {packed >> 8 & 255}, {packed & 255})"


def colour_listing(colours: list[int], pixels: dict[int, int] | None = None) -> str:
    """``"(12, 250, 3) ×1,204 px, (0, 0, 1) ×3 px, … and 4 more"``: the colours with their pixel
    counts, most pixels first (without counts, in the order given); the first few only."""
    if pixels is not None:
        colours = sorted(colours, key=lambda c: (-pixels[c], c))
    shown = [
        colour_name(c) + (f" ×{pixels[c]:,} px" if pixels is not None else "")
        for c in colours[:_COLOURS_SHOWN]
    ]
    more = len(colours) - len(shown)
    return ", ".join(shown) + (f", … and {more} more" if more else "")


def translucent_problem(count: int) -> str:
    """What is wrong with ``count`` pixels of an RGBA label image that are not fully opaque."""
    pixels = f"{count:,} pixel" + ("" if count == 1 else "s")
    return (
        f"alpha < 255 (not fully opaque) in {pixels}, whose colour is then no class's; save "
        "colour labels as RGB, or RGBA with alpha 255 everywhere"
    )


def colours_count(count: int) -> str:
    """``"1 colour"``, ``"3 colours"``."""
    return f"{count} colour" + ("" if count == 1 else "s")


def colour_classes(task: TaskSpec) -> dict[int, int]:
    """``{packed colour: class index}`` of a colour task: its ``colors``, and its
    ``ignore_colors`` as :data:`IGNORE_INDEX` (the spec checks keep the colours distinct)."""
    table = {pack_rgb(colour): IGNORE_INDEX for colour in task.ignore_colors}
    for index, name in enumerate(task.classes):
        if task.colors and name in task.colors:
            table[pack_rgb(as_rgb(task.colors[name]))] = index
    return table


def colour_table(task: TaskSpec, uniques: np.ndarray, file: str | Path) -> np.ndarray:
    """The class index (``IGNORE_INDEX`` for ``ignore_colors``) of each packed colour in
    ``uniques``.

    Raises:
        UserError: naming ``file`` and ``tasks.<task>.colors``, for colours of no class.
    """
    classes = colour_classes(task)
    table = np.empty(len(uniques), dtype=np.int64)
    unmapped = []
    for i, colour in enumerate(uniques.tolist()):
        target = classes.get(colour)
        if target is None:
            unmapped.append(colour)
        else:
            table[i] = target
    if unmapped:
        raise UserError(
            f"task {task.name!r}: {colours_count(len(unmapped))} not in "
            f"tasks.{task.name}.colors: {colour_listing(unmapped)}; {unmapped_hint(task, [file])}",
            file=file,
            field=f"tasks.{task.name}.colors",
        )
    return table


def map_colours(task: TaskSpec, raw: np.ndarray, file: str | Path) -> np.ndarray:
    """The RGB(A) colours of one label image -> class indices through the task's ``colors``.

    Raises:
        UserError: naming ``file``, for an image that is not RGB (a grey one: its values would be
            class indices, which ``label_format: index`` reads), a pixel that is not fully opaque,
            or a colour of no class.
    """
    if not is_colour_image(raw):
        what = "greyscale" if raw.ndim == 2 else f"an array of shape {raw.shape}"
        raise UserError(
            f"task {task.name!r}: label image is {what}, not RGB; `label_format: colour` reads "
            "RGB (or opaque RGBA) colour masks: save the labels as RGB, or set "
            "`label_format: index` for index maps",
            file=file,
            field=f"tasks.{task.name}.label_format",
        )
    packed = pack_colours(raw, file)
    # A few colours in millions of pixels: a plain sort and a binary search per pixel take half
    # the time of np.unique's return_inverse (an argsort).
    uniques = np.unique(packed)
    if uniques.size and uniques[0] == TRANSLUCENT:  # sorted: the smallest value
        count = int(np.count_nonzero(packed == TRANSLUCENT))
        raise UserError(
            f"task {task.name!r}: {translucent_problem(count)}",
            file=file,
            field=f"tasks.{task.name}.labels",
        )
    return class_table(task, uniques, file)[np.searchsorted(uniques, packed)]
