"""The augmentation preview figure: training crops as the model receives them, labels overlaid.

One row per sample; one column per modality (the image, every task's label on it) and one per
task (its label map alone). Ignore pixels (255: padding outside the image, or no label) are grey
stripes. The samples are drawn by ``mmseg-heads inspect CONFIG --augment-preview OUT.png``
(:mod:`mmseg_heads.cli.inspect`); this module only draws them, like the rest of ``report`` it
imports nothing of the package but the base modules. Needs matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from mmseg_heads.report.plots import _display, _png, _pyplot, prediction_rgba, report_palette

#: ``mmseg_heads.data.spec.IGNORE_INDEX`` (``report`` may not import ``data``).
IGNORE_INDEX = 255
#: Grey stripes of ignore pixels (RGBA): light and dark grey along diagonals.
_IGNORE_LIGHT = (0.78, 0.78, 0.78, 0.9)
_IGNORE_DARK = (0.45, 0.45, 0.45, 0.9)
_CELL_INCHES = 1.9
#: Characters of the 9-point caption that fit the width of one cell.
_CAPTION_CHARS_PER_CELL = 26


def centre_slice(image: np.ndarray, channels: int, context: int) -> np.ndarray:
    """A modality's ``C·(2k+1)×H×W`` input with 2.5-D context -> the centre slice's ``C×H×W``
    (the slices are stacked in order, ``k`` on each side of the centre)."""
    return image[context * channels : (context + 1) * channels]


def ignore_rgba(ignore: np.ndarray) -> np.ndarray:
    """``H×W×4``: ``ignore`` pixels as diagonal grey stripes (about 1/32 of the side wide, so
    they look alike at any crop size), all others transparent."""
    width = max(2, round(max(ignore.shape) / 32))
    rows, cols = np.indices(ignore.shape)
    stripes = ((rows + cols) // width) % 2 == 0
    rgba = np.where(stripes[..., None], _IGNORE_LIGHT, _IGNORE_DARK)
    rgba[~ignore] = 0.0
    return rgba


def label_rgb(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``H×W×4``: each pixel in its class colour (background black), ignore pixels striped."""
    ignore = labels == IGNORE_INDEX
    colours = palette[np.clip(np.where(ignore, 0, labels), 0, len(palette) - 1)]
    rgba = np.dstack([colours, np.ones(labels.shape)])
    stripes = ignore_rgba(ignore)
    return np.where(ignore[..., None], stripes, rgba)


def _task_colours(spec: Any) -> dict[str, np.ndarray]:
    """Each task's palette as a ``classes × 3`` array in 0..1."""
    return {
        name: report_palette({"palette": task.palette, "classes": list(task.classes)})
        for name, task in spec.tasks.items()
    }


def _label_overlay(ax, labels: dict[str, np.ndarray], colours: dict[str, np.ndarray]) -> None:
    """Every task's classes as semi-transparent fills with their outlines in the class colour
    (so overlapping tasks stay apart; the task with the least foreground on top), and the pixels
    every task ignores striped."""
    ignored = [labels[t] == IGNORE_INDEX for t in labels]
    everywhere = np.logical_and.reduce(ignored) if ignored else None
    valid_maps = {t: np.where(label == IGNORE_INDEX, 0, label) for t, label in labels.items()}
    by_area = sorted(valid_maps, key=lambda t: -int((valid_maps[t] > 0).sum()))
    for task in by_area:
        valid = valid_maps[task]
        if valid.max() == 0:
            continue
        ax.imshow(prediction_rgba(valid, colours[task]), interpolation="nearest")
        for index in np.unique(valid[valid > 0]):
            region = valid == index
            if not region.all():  # a region filling the crop has no outline to draw
                ax.contour(region, levels=[0.5], colors=[colours[task][index]], linewidths=0.7)
    if everywhere is not None and everywhere.any():
        ax.imshow(ignore_rgba(everywhere), interpolation="nearest")


def _setting(value: Any) -> str:
    """``train.augment`` (a preset name or a list of transforms) in a few words."""
    if isinstance(value, list):
        names = [e if isinstance(e, str) else next(iter(e)) for e in value]
        return "[" + ", ".join(names) + "]" if names else "[]"
    return str(value)


def caption(train: dict, seed: int) -> str:
    """What made the crops: augment, crop, crop_foreground, resize, flips, seed."""
    parts = [
        f"augment {_setting(train.get('augment', 'none'))}",
        f"crop {train['crop']}",
        f"crop_foreground {train.get('crop_foreground', 0.0):g}",
        f"resize {'native' if train.get('resize') is None else train['resize']}",
    ]
    flips = [f for f in ("hflip", "vflip") if train.get(f)]
    if flips:
        parts.append(" + ".join(flips))
    if train.get("augment_on", "cpu") != "cpu":
        parts.append(f"on {train['augment_on']}")
    return f"training crops (epoch 1, seed {seed}): " + ", ".join(parts)


def augment_preview_png(samples: list[dict], spec: Any, train: dict, seed: int) -> bytes:
    """The preview grid as PNG bytes.

    Args:
        samples: training items (``images``, ``labels``, ``has_label``, ``id``), as the train
            dataset returns them (tensors or arrays).
        spec: the data spec (its ``modalities``, ``tasks`` and ``context``).
        train: the config's ``train`` section, for the caption.
        seed: the seed that drew the samples, for the caption.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    modalities = list(spec.modalities)
    tasks = list(spec.tasks)
    colours = _task_colours(spec)
    columns = len(modalities) + len(tasks)
    fig, axes = plt.subplots(
        len(samples),
        columns,
        figsize=(_CELL_INCHES * columns, _CELL_INCHES * len(samples) + 0.7),
        squeeze=False,
        layout="constrained",
    )
    for row, sample in enumerate(samples):
        labels = {t: np.asarray(sample["labels"][t]) for t in tasks}
        sample_id = sample["id"]
        for column, modality in enumerate(modalities):
            ax = axes[row][column]
            image = centre_slice(
                np.asarray(sample["images"][modality], dtype=np.float32),
                spec.modalities[modality].channels,
                spec.context,
            )
            shown = _display(image)
            ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray")
            _label_overlay(ax, {t: labels[t] for t in tasks if sample["has_label"][t]}, colours)
            ax.set_title(f"{modality} + labels\n{sample_id}", fontsize=8)
        for offset, task in enumerate(tasks):
            ax = axes[row][len(modalities) + offset]
            ax.imshow(label_rgb(labels[task], colours[task]), interpolation="nearest")
            missing = "" if sample["has_label"][task] else " (no label)"
            ax.set_title(f"{task}{missing}\n{sample_id}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    ignore = Patch(facecolor=_IGNORE_LIGHT, edgecolor=_IGNORE_DARK, hatch="////", label="ignore")
    for offset, task in enumerate(tasks):
        handles = [
            Patch(facecolor=colours[task][i], edgecolor="grey", label=name)
            for i, name in enumerate(spec.tasks[task].classes)
        ]
        axes[-1][len(modalities) + offset].legend(
            handles=[*handles, ignore],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.02),
            ncol=2,
            fontsize=7,
            frameon=False,
        )
    # wrapped to the grid's width, so that a narrow grid is not widened by its caption
    text = textwrap.fill(caption(train, seed), width=_CAPTION_CHARS_PER_CELL * columns)
    fig.suptitle(text, fontsize=9)
    return _png(fig)
