"""The data spec's schema (:data:`DATA_SPEC_SCHEMA`) and the checks the schema cannot express.

The schema checks each field on its own: types, choices, ranges, a file pattern's ``{id}``, a
volume's ``keep`` rule. :func:`cross_field_problems` checks what spans fields: ``annotated_on``
names modalities, value maps hit classes, ``colors`` name classes, one split rule each, fraction
seeds and sums, normalisation statistics per channel, percentile clips, and a ``volume`` section
on 2-D image formats, and what ``label_format: colour`` needs (a distinct colour for every
class). ``docs/data_spec.md`` is generated from the schema.
"""

from __future__ import annotations

import re

from mmseg_heads.data.labels import IGNORE_INDEX, LABEL_FORMATS
from mmseg_heads.data.readers import PLANAR_EXTENSIONS, extension_of
from mmseg_heads.errors import UserError
from mmseg_heads.palette import Colour, as_rgb
from mmseg_heads.schema import Any_, Field, ListOf, MapOf, OneOf, Struct, closest

NORMALIZATIONS = ("zscore", "minmax", "imagenet", "none")


def _check_pattern(value: str) -> str | None:
    return None if "{id}" in value else "must contain '{id}', e.g. 'images/{id}.png'"


MODALITY_SCHEMA = Struct(
    {
        "files": Field(
            str, doc="file pattern with `{id}`, relative to `root`", check=_check_pattern
        ),
        "channels": Field(int, default=1, minimum=1, doc="channels of one image (3 for RGB)"),
        "normalize": OneOf(
            [
                Field(str, choices=NORMALIZATIONS),
                Struct(
                    {
                        "mean": ListOf(Field(float), default=None),
                        "std": ListOf(Field(float), default=None),
                        "scale": Field(float, default=None),
                    }
                ),
            ],
            default="zscore",
            doc="per-image normalisation: zscore, minmax, imagenet, none, {mean, std} or {scale}",
        ),
        "clip_percentiles": ListOf(
            Field(float, minimum=0.0, maximum=100.0),
            default=None,
            doc="`[low, high]`: clip each image and channel to these percentiles before `normalize`",
        ),
    },
    doc="one input modality",
)

TASK_SCHEMA = Struct(
    {
        "labels": Field(str, doc="label file pattern with `{id}`", check=_check_pattern),
        "label_format": Field(
            str,
            default="index",
            choices=LABEL_FORMATS,
            doc="`index`: a pixel's raw value is its class (through `values` or `threshold`); "
            "`colour`: label files are RGB colour masks, a pixel's colour is its class through "
            "`colors`",
        ),
        "classes": ListOf(
            Field(str), min_items=2, doc="class names; index 0 first (usually background)"
        ),
        "values": Any_(
            default=None,
            shape="mapping raw value -> class index | 'ignore'",
            doc="raw label value -> class index or `ignore`; key `other` catches the rest; default identity",
        ),
        "threshold": Field(
            float, default=None, doc="binary masks: raw > threshold is class 1, else 0"
        ),
        "ignore": ListOf(Field(int), default=list, doc="raw values excluded from loss and metrics"),
        "optional": Field(
            bool, default=False, doc="samples without a label file train the other tasks"
        ),
        "annotated_on": ListOf(Field(str), default=list, doc="modalities the labels were drawn on"),
        "inside": MapOf(
            ListOf(Field(str), min_items=1),
            default=None,
            doc="`{task: [classes]}`: this task's foreground lies inside those classes of another "
            "task (MyoPS: scar inside edema); `eval.nesting` applies it to predictions",
        ),
        "colors": MapOf(
            Colour(),
            default=None,
            doc='class name -> `[r, g, b]` (0-255) or `"#rrggbb"`: the class\'s colour in '
            "predicted masks, overlays and report figures; unlisted classes keep the default; "
            "with `label_format: colour` also its colour in the label files (every class then "
            "needs a distinct one)",
        ),
        "ignore_colors": ListOf(
            Colour(),
            default=list,
            doc='`label_format: colour`: colours (`[r, g, b]` or `"#rrggbb"`) whose pixels are '
            "excluded from loss and metrics, e.g. VOC's border `[224, 224, 192]`",
        ),
    },
    doc="one task with its own label set",
)

SPLIT_SCHEMA = Struct(
    {
        "ids": Field(
            str,
            default=None,
            doc="text file with one id per line (next to the spec, else under `root`)",
        ),
        "pattern": Field(str, default=None, doc="regular expression searched in each id"),
        "fraction": Field(
            float, default=None, minimum=0.0, maximum=1.0, doc="random share of the ids"
        ),
        "seed": Field(int, default=0, doc="seed of the `fraction` draw"),
    },
    doc="exactly one of `ids`, `pattern`, `fraction`",
)

KEEP_RULE = re.compile(r"^(all|labelled)(?:\+(\d+))?$")


def _check_keep(value: str) -> str | None:
    match = KEEP_RULE.match(value)
    if match and not (match.group(1) == "all" and match.group(2)):
        return None
    return "must be all, labelled or labelled+N (N slices kept on each side), e.g. labelled+2"


VOLUME_SCHEMA = Struct(
    {
        "slice_axis": Field(
            int, default=2, choices=(0, 1, 2), doc="array axis the 2-D slices are taken across"
        ),
        "keep": Field(
            str,
            default="all",
            check=_check_keep,
            doc="`all` slices, `labelled` ones, or `labelled+N`: also N slices on each side",
        ),
        "labelled_weight": Field(
            float,
            default=1.0,
            check=lambda value: None if value > 0 else "must be > 0",
            doc="training draws a labelled slice this many times as often as an unlabelled one",
        ),
        "cache": Field(
            int, default=4, minimum=0, doc="decoded cases kept in memory per dataset and worker"
        ),
        "context": Field(
            int,
            default=0,
            minimum=0,
            maximum=8,
            doc="2.5-D: also feed slices i-k … i+k of each modality as its channels (edges "
            "replicated); a modality's input then has channels × (2k+1)",
        ),
    },
    default=None,
    doc="3-D files become 2-D slices with ids `{case}#{slice}`",
)

DATA_SPEC_SCHEMA = Struct(
    {
        "name": Field(str, default=None, doc="data set name (default: the file name)"),
        "root": Field(
            str, default=".", doc="folder the patterns are relative to (relative to the spec)"
        ),
        "modalities": MapOf(MODALITY_SCHEMA, min_items=1, doc="input modalities by name"),
        "tasks": MapOf(TASK_SCHEMA, min_items=1, doc="tasks by name, each with its own classes"),
        "splits": MapOf(
            SPLIT_SCHEMA, min_items=1, doc="named subsets of the ids (train, val, ...)"
        ),
        "volume": VOLUME_SCHEMA,
    }
)


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
        problems += _check_label_format(name, task, raw["volume"] is not None)
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


def _check_label_format(name: str, task: dict, volume: bool) -> list[UserError]:
    """``label_format: colour`` reads classes from colours alone: every class has a colour of its
    own (else a pixel's class would be ambiguous or missing), no ignore colour is a class's, and
    the raw-value keys, which would silently do nothing, are not given. ``ignore_colors`` belong to
    colour labels only."""
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
