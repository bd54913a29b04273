"""The data spec's checks that span fields, on a spec the schema has validated.

The schema (:mod:`mmseg_heads.data.spec_schema`) checks each field on its own;
:func:`cross_field_problems` checks what spans fields: ``annotated_on`` names modalities, value
maps hit classes, ``colors`` name classes, ``inside`` names other tasks' classes without a cycle,
one split rule each, fraction seeds and sums, normalisation statistics per channel, percentile
clips, a ``volume`` section on 2-D image formats, and what ``label_format: colour`` needs
(:func:`~mmseg_heads.data.colour_checks.colour_spec_problems`). Every problem is collected, none
raised: the caller raises them as one error.
"""

from __future__ import annotations

import re

from mmseg_heads.data.colour_checks import colour_spec_problems
from mmseg_heads.data.labels import IGNORE_INDEX
from mmseg_heads.data.readers import PLANAR_EXTENSIONS, extension_of
from mmseg_heads.errors import UserError
from mmseg_heads.schema import closest


def cross_field_problems(raw: dict) -> list[UserError]:
    """Every problem of a schema-validated spec that spans fields (no file named yet)."""
    problems: list[UserError] = []
    _check_cross_references(raw, problems)
    problems += _check_volume_formats(raw)
    return problems


def _check_inside(name: str, task: dict, tasks: dict) -> list[UserError]:
    """``inside`` names other tasks and their classes, and no task ends up inside itself."""
    problems = []
    for parent, classes in (task["inside"] or {}).items():
        field = f"tasks.{name}.inside.{parent}"
        if parent == name or parent not in tasks:
            others = [t for t in tasks if t != name]
            problems.append(
                UserError(
                    f"{parent!r} is not another task (tasks: {', '.join(others)})", field=field
                )
            )
            continue
        unknown = [c for c in classes if c not in tasks[parent]["classes"]]
        if unknown:
            problems.append(
                UserError(
                    f"{', '.join(map(repr, unknown))} not a class of {parent!r} "
                    f"({', '.join(tasks[parent]['classes'])})",
                    field=field,
                )
            )
    seen, path = set(), [name]
    while path and not problems:  # follow the parents: reaching `name` again is a cycle
        for parent in tasks[path.pop()]["inside"] or {}:
            if parent == name:
                problems.append(
                    UserError(f"{name!r} ends up inside itself", field=f"tasks.{name}.inside")
                )
            elif parent not in seen and parent in tasks:
                seen.add(parent)
                path.append(parent)
    return problems


def _check_cross_references(raw: dict, problems: list[UserError]) -> None:
    modalities = raw["modalities"]
    for name, task in raw["tasks"].items():
        for modality in task["annotated_on"]:
            if modality not in modalities:
                problems.append(
                    UserError(
                        f"{modality!r} is not a modality (modalities: {', '.join(modalities)})",
                        field=f"tasks.{name}.annotated_on",
                    )
                )
        if len(task["classes"]) >= IGNORE_INDEX:
            problems.append(
                UserError(f"at most {IGNORE_INDEX - 1} classes", field=f"tasks.{name}.classes")
            )
        if task["values"] is not None:
            problems += _check_value_map(
                task["values"], len(task["classes"]), f"tasks.{name}.values"
            )
        problems += _check_colors(name, task)
        problems += colour_spec_problems(name, task, raw["volume"] is not None)
        problems += _check_inside(name, task, raw["tasks"])
        if task["values"] is not None and task["threshold"] is not None:
            problems.append(
                UserError("give `values` or `threshold`, not both", field=f"tasks.{name}")
            )
        if task["threshold"] is not None and len(task["classes"]) != 2:
            problems.append(
                UserError(
                    "a `threshold` makes a binary task: give exactly 2 classes",
                    field=f"tasks.{name}.classes",
                )
            )
    for name, rule in raw["splits"].items():
        given = [k for k in ("ids", "pattern", "fraction") if rule[k] is not None]
        if len(given) != 1:
            problems.append(
                UserError(
                    f"give exactly one of ids, pattern, fraction (got {given or 'none'})",
                    field=f"splits.{name}",
                )
            )
        if rule["pattern"] is not None:
            try:
                re.compile(rule["pattern"])
            except re.error as exc:
                problems.append(
                    UserError(f"not a regular expression: {exc}", field=f"splits.{name}.pattern")
                )
    seeds = {r["seed"] for r in raw["splits"].values() if r["fraction"] is not None}
    if len(seeds) > 1:
        problems.append(
            UserError(
                f"fraction splits share one shuffle, so they need the same seed (got {sorted(seeds)})",
                field="splits",
            )
        )
    for name, modality in modalities.items():
        problems += _check_normalization(name, modality)
    fractions = sum(r["fraction"] or 0.0 for r in raw["splits"].values())
    if fractions > 1.0 + 1e-9:
        problems.append(UserError(f"split fractions add up to {fractions:g} > 1", field="splits"))


def _check_colors(name: str, task: dict) -> list[UserError]:
    """Every key of ``colors`` must be a class of the task (a typo would silently keep the default
    colour)."""
    classes = task["classes"]
    problems = []
    for key in task["colors"] or {}:
        if key in classes:
            continue
        hint = closest(key, list(classes))
        did_you_mean = f"; did you mean {hint!r}?" if hint else ""
        problems.append(
            UserError(
                f"not a class of task {name} (classes: {', '.join(classes)}){did_you_mean}",
                field=f"tasks.{name}.colors.{key}",
            )
        )
    return problems


def _check_volume_formats(raw: dict) -> list[UserError]:
    """A ``volume`` section on PNG, JPEG, … files: one message for the spec, from the patterns
    alone, not one per file (an RGB image's H×W×3 would pass for a volume of 3 slices and then
    fail every file's channel check)."""
    if raw["volume"] is None:
        return []
    patterns = {f"modalities.{n}.files": m["files"] for n, m in raw["modalities"].items()}
    patterns |= {f"tasks.{n}.labels": t["labels"] for n, t in raw["tasks"].items()}
    planar = [(k, p) for k, p in patterns.items() if extension_of(p) in PLANAR_EXTENSIONS]
    if not planar:
        return []
    where, pattern = planar[0]
    others = len(planar) - 1
    more = {0: "", 1: " (so does 1 other pattern)"}.get(others, f" (so do {others} other patterns)")
    kind = extension_of(pattern).lstrip(".").upper()
    return [
        UserError(
            f"set, but {where} {pattern!r} names 2-D images ({kind}), not volumes{more}; "
            "remove `volume` for 2-D images (it slices NIfTI or .npy volumes)",
            field="volume",
        )
    ]


def _check_normalization(name: str, modality: dict) -> list[UserError]:
    how, channels = modality["normalize"], modality["channels"]
    where = f"modalities.{name}.normalize"
    problems = _check_clip(modality["clip_percentiles"], f"modalities.{name}.clip_percentiles")
    if how == "imagenet" and channels != 3:
        problems.append(
            UserError(
                f"imagenet statistics are for 3-channel RGB; this modality has {channels}",
                field=where,
            )
        )
    if not isinstance(how, dict):
        return problems
    given = sorted(k for k, v in how.items() if v is not None)
    if given not in (["mean", "std"], ["scale"]):
        problems.append(
            UserError(f"give {{mean, std}} or {{scale}}, got {{{', '.join(given)}}}", field=where)
        )
        return problems
    if "mean" in given:
        for key in ("mean", "std"):
            if len(how[key]) not in (1, channels):
                problems.append(
                    UserError(
                        f"needs 1 or {channels} values, got {len(how[key])}",
                        field=f"{where}.{key}",
                    )
                )
        if any(v <= 0 for v in how["std"]):
            problems.append(UserError("std values must be > 0", field=f"{where}.std"))
    return problems


def _check_clip(clip: list[float] | None, where: str) -> list[UserError]:
    if clip is None:
        return []
    if len(clip) != 2 or not clip[0] < clip[1]:
        return [UserError(f"give [low, high] percentiles with low < high, got {clip}", field=where)]
    return []


def _check_value_map(values, num_classes: int, where: str) -> list[UserError]:
    if not isinstance(values, dict) or not values:
        return [UserError("expected a mapping raw value -> class index or 'ignore'", field=where)]
    problems = []
    for key, target in values.items():
        if not (isinstance(key, (int, float)) and not isinstance(key, bool)) and key != "other":
            problems.append(
                UserError(f"key {key!r} must be a raw pixel value or 'other'", field=where)
            )
        if target == "ignore":
            continue
        if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < num_classes:
            problems.append(
                UserError(
                    f"{key!r} -> {target!r}: must be a class index 0..{num_classes - 1} or 'ignore'",
                    field=f"{where}.{key}",
                )
            )
    return problems
