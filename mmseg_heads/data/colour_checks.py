"""What ``label_format: colour`` needs, checked where it can first be seen.

- In the data spec (:func:`colour_spec_problems`, one of the spec's cross-field checks): every
  class has a colour of its own, no ignore colour is a class's, the raw-value keys (``values``,
  ``threshold``, ``ignore``) are not given, no ``volume`` section; ``ignore_colors`` only with
  colour labels.
- In the data scan (:func:`colour_file_problems`, :func:`unmapped_colours_problem`): each label
  file is an opaque RGB image whose colours are those of classes, from the colour histogram the
  scan took (colours of no class are listed once per task, over all its files).

The colour -> class mapping itself is :mod:`mmseg_heads.data.labels`'.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from mmseg_heads.data.checks import Problem
from mmseg_heads.data.labels import (
    TRANSLUCENT,
    colour_classes,
    colour_listing,
    colours_count,
    translucent_problem,
)
from mmseg_heads.errors import UserError
from mmseg_heads.palette import as_rgb

if TYPE_CHECKING:
    from mmseg_heads.data.scan_cache import FileFacts
    from mmseg_heads.data.spec import TaskSpec


def colour_spec_problems(name: str, task: dict, volume: bool) -> list[UserError]:
    """``label_format: colour`` reads classes from colours alone: every class has a colour of its
    own (else a pixel's class would be ambiguous or missing), no ignore colour is a class's, and
    the raw-value keys, which would silently do nothing, are not given. ``ignore_colors`` belong to
    colour labels only.

    Args:
        name: the task's name.
        task: its schema-validated entry of the spec.
        volume: whether the spec has a ``volume`` section.
    """
    where = f"tasks.{name}"
    if task["label_format"] != "colour":
        if task["ignore_colors"]:
            return [
                UserError(
                    "only read with `label_format: colour`; for index labels list raw values "
                    "in `ignore`",
                    field=f"{where}.ignore_colors",
                )
            ]
        return []
    problems = [
        UserError(
            f"`{key}` is for raw values of index labels; with `label_format: colour` the classes "
            "come from `colors` (ignored pixels from `ignore_colors`)",
            field=f"{where}.{key}",
        )
        for key in ("values", "threshold", "ignore")
        if task[key] not in (None, [])
    ]
    if volume:
        problems.append(
            UserError(
                "colour labels are 2-D RGB images, but the `volume` section slices 3-D files; "
                "use `label_format: index` for label volumes",
                field=f"{where}.label_format",
            )
        )
    colors = task["colors"] or {}
    missing = [c for c in task["classes"] if c not in colors]
    if missing:
        problems.append(
            UserError(
                "`label_format: colour` maps each pixel's colour to a class through `colors`, so "
                f"every class needs one; no colour for: {', '.join(missing)}",
                field=f"{where}.colors",
            )
        )
    owner: dict[tuple, str] = {}  # colour -> the first class that has it
    for cls in task["classes"]:
        if cls not in colors:
            continue
        colour = as_rgb(colors[cls])
        if colour in owner:
            problems.append(
                UserError(
                    f"{owner[colour]!r} and {cls!r} have the same colour {colour}; colour labels "
                    "need a distinct colour per class",
                    field=f"{where}.colors",
                )
            )
        owner.setdefault(colour, cls)
    for colour in map(as_rgb, task["ignore_colors"]):
        if colour in owner:
            problems.append(
                UserError(
                    f"{colour} is the colour of class {owner[colour]!r}; a colour is a class or "
                    "ignored, not both",
                    field=f"{where}.ignore_colors",
                )
            )
    return problems


def colour_file_problems(
    task: TaskSpec, path: Path, facts: FileFacts
) -> tuple[list[Problem], Counter]:
    """The checks of one colour label file: an RGB image, opaque, its colours those of classes.

    Returns:
        ``(problems, pixels per packed colour of no class)``: those colours are not a problem of
        this file alone, but listed once per task (:func:`unmapped_colours_problem`).
    """
    name = task.name
    if not facts.colours:
        what = "a greyscale image" if len(facts.shape) == 2 else f"an array of shape {facts.shape}"
        return [
            Problem(
                f"{path} is {what}, not RGB; `label_format: colour` reads RGB (or opaque RGBA) "
                "colour masks: save the labels as RGB, or set `label_format: index` for index maps",
                f"tasks.{name}.label_format",
            )
        ], Counter()
    classes = colour_classes(task)
    problems, unmapped = [], Counter()
    for colour, count in facts.colours:
        if colour == TRANSLUCENT:
            problems.append(
                Problem(f"{path}: {translucent_problem(count)}", f"tasks.{name}.labels")
            )
        elif colour not in classes:
            unmapped[colour] += count
    return problems, unmapped


def unmapped_colours_problem(task: TaskSpec, counter: Counter, where: str, hint: str) -> Problem:
    """One problem per colour task for its colours of no class (``counter``: pixels per packed
    colour), over all its files (``where``: which files; ``hint``: how to fix it)."""
    listing = colour_listing(list(counter), counter)
    return Problem(
        f"{colours_count(len(counter))} not in tasks.{task.name}.colors: {listing}; {where}; "
        f"{hint}",
        f"tasks.{task.name}.colors",
    )
