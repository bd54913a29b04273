"""Data specs: which files hold each modality and each task's labels, and how to read them.

A data spec is a YAML file (see ``docs/data_spec.md``); :func:`load_data_spec` validates it against
:data:`DATA_SPEC_SCHEMA` and returns a :class:`DataSpec`. Paths are relative to the spec file.
"""

from __future__ import annotations

import glob
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mmseg_heads.data.readers import PLANAR_EXTENSIONS, extension_of
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.palette import RGB, Colour, task_palette
from mmseg_heads.schema import Any_, Field, ListOf, MapOf, OneOf, Struct, closest, validate

#: Label value of pixels that no loss and no metric sees (padding, ``ignore`` raw values).
IGNORE_INDEX = 255
#: Between a case id and a slice index in the ids of sliced volumes: ``Case3001#2``.
SLICE_SEPARATOR = "#"
NORMALIZATIONS = ("zscore", "minmax", "imagenet", "none")
#: Lossy label formats: their compression smears class edges into values of no class.
JPEG_EXTENSIONS = (".jpg", ".jpeg")


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
        "colors": MapOf(
            Colour(),
            default=None,
            doc='class name -> `[r, g, b]` (0-255) or `"#rrggbb"`: the class\'s colour in '
            "predicted masks, overlays and report figures; unlisted classes keep the default",
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


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    files: str
    channels: int = 1
    normalize: str | dict = "zscore"
    clip_percentiles: tuple[float, float] | None = None


@dataclass(frozen=True)
class VolumeSpec:
    """How 3-D files become 2-D samples (the data spec's ``volume`` section).

    Attributes:
        slice_axis: array axis (0, 1 or 2) the slices are taken across.
        keep: ``all`` or ``labelled``.
        margin: with ``labelled``, slices kept on each side of a labelled one (``labelled+N``).
        labelled_weight: relative draw weight of a labelled slice in training.
        cache: decoded cases kept per dataset and worker.
        context: 2.5-D context: slices on each side fed as extra channels.
    """

    slice_axis: int = 2
    keep: str = "all"
    margin: int = 0
    labelled_weight: float = 1.0
    cache: int = 4
    context: int = 0

    @classmethod
    def from_dict(cls, raw: dict) -> VolumeSpec:
        match = KEEP_RULE.match(raw["keep"])
        return cls(
            slice_axis=raw["slice_axis"],
            keep=match.group(1),
            margin=int(match.group(2) or 0),
            labelled_weight=raw["labelled_weight"],
            cache=raw["cache"],
            context=raw.get("context", 0),
        )

    @property
    def needs_labels(self) -> bool:
        """Whether building the slice list reads the label volumes (to find labelled slices)."""
        return self.keep == "labelled" or self.labelled_weight != 1.0


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: str
    classes: tuple[str, ...]
    values: dict | None = None
    threshold: float | None = None
    ignore: tuple[int, ...] = ()
    optional: bool = False
    annotated_on: tuple[str, ...] = ()
    #: The spec's ``colors``: class name -> ``[r, g, b]`` or ``"#rrggbb"``, as validated.
    colors: dict | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette(self) -> list[RGB]:
        """One ``(r, g, b)`` per class: the spec's ``colors``, the default palette elsewhere."""
        return task_palette(self.classes, self.colors)

    def map_labels(self, raw: np.ndarray, file: str | Path) -> np.ndarray:
        """Raw label values of one 2-D label image -> class indices (``IGNORE_INDEX`` for ignored
        pixels).

        Raises a :class:`UserError` naming ``file`` for a colour image, a value with no mapping or
        a class index out of range: never a silent remap to ignore.
        """
        if raw.ndim == 3 and raw.shape[2] in (3, 4):
            raise UserError(
                f"task {self.name!r}: label image has {raw.shape[2]} colour channels; labels must be "
                "single-channel index maps (save a palette or grayscale PNG)",
                file=file,
                field=f"tasks.{self.name}.labels",
            )
        if raw.ndim != 2:
            raw = np.squeeze(raw)
        if raw.ndim > 2:  # e.g. an H×W×2 array: extra channels, not an index map
            raise UserError(
                f"task {self.name!r}: label array has shape {raw.shape}; labels must be "
                "single-channel H×W index maps",
                file=file,
                field=f"tasks.{self.name}.labels",
            )
        return self.map_values(raw, file)

    def map_values(self, raw: np.ndarray, file: str | Path) -> np.ndarray:
        """Raw label values -> class indices, element-wise, for an array of any shape (a whole
        label volume too). Errors as :meth:`map_labels`."""
        if self.threshold is not None:
            out = (raw > self.threshold).astype(np.int64)
            if self.ignore:
                out[np.isin(raw, self.ignore)] = IGNORE_INDEX
            return out
        uniques, index_of = unique_values(raw)
        return self.class_table(uniques, file)[index_of()]

    def class_table(self, uniques: np.ndarray, file: str | Path) -> np.ndarray:
        """The class index (``IGNORE_INDEX`` for ignored values) of each raw value in ``uniques``.

        Raises:
            UserError: naming ``file``, for raw values with no class.
        """
        if self.threshold is not None:
            table = (uniques > self.threshold).astype(np.int64)
            table[np.isin(uniques, self.ignore)] = IGNORE_INDEX
            return table
        table = np.empty(len(uniques), dtype=np.int64)
        unmapped = []
        for i, value in enumerate(uniques.tolist()):
            target = IGNORE_INDEX if value in self.ignore else self._lookup(value)
            if target is None:
                unmapped.append(value)
            else:
                table[i] = target
        if unmapped:
            hint = self.unmapped_hint([file])
            raise UserError(
                f"task {self.name!r}: raw label values {unmapped} have no class "
                f"(classes 0..{self.num_classes - 1}); {hint}",
                file=file,
                field=f"tasks.{self.name}.values",
            )
        return table

    def unmapped_hint(self, files: list[str | Path]) -> str:
        """How to fix raw label values with no class found in ``files`` (label files)."""
        if any(extension_of(f) in JPEG_EXTENSIONS for f in files):
            return (
                "the label files are JPEG, whose lossy compression creates in-between values "
                "along class edges: save the labels in a lossless format (PNG), from the original "
                "annotation (mapping these values with `values` would keep wrong pixels)"
            )
        return "add them to `values`" if self.values else "give a `values` map or a `threshold`"

    def _lookup(self, value) -> int | None:
        # NaN, infinities and fractions (float label files) are never a class index; int() would
        # fail on the first two and round the last.
        whole = int(value) if float(value).is_integer() else None
        if self.values is None:
            return whole if whole is not None and 0 <= whole < self.num_classes else None
        target = self.values.get(value, self.values.get(whole, self.values.get("other")))
        if target is None:
            return None
        return IGNORE_INDEX if target == "ignore" else int(target)


@dataclass
class DataSpec:
    name: str
    path: Path
    root: Path
    modalities: dict[str, ModalitySpec]
    tasks: dict[str, TaskSpec]
    splits: dict[str, dict]
    raw: dict = field(default_factory=dict, repr=False)
    volume: VolumeSpec | None = None

    # --- ids ---------------------------------------------------------------------------------
    def case_of(self, sample_id: str) -> tuple[str, int | None]:
        """``(file id, slice index)`` of a sample id: ``"Case3001#2"`` -> ``("Case3001", 2)`` when
        the spec slices volumes; otherwise the id itself and ``None``."""
        if self.volume is not None:
            case, sep, index = sample_id.rpartition(SLICE_SEPARATOR)
            if sep and index.isdigit():
                return case, int(index)
        return sample_id, None

    # --- files -------------------------------------------------------------------------------
    def modality_file(self, modality: str, sample_id: str) -> Path:
        """The file of ``modality`` for a file id or a slice id (the slice's volume)."""
        case, _ = self.case_of(sample_id)
        return self.root / self.modalities[modality].files.format(id=case)

    def label_file(self, task: str, sample_id: str) -> Path:
        """The label file of ``task`` for a file id or a slice id (the slice's volume)."""
        case, _ = self.case_of(sample_id)
        return self.root / self.tasks[task].labels.format(id=case)

    def all_ids(self) -> list[str]:
        """Ids found on disk through the first modality's file pattern (case ids for volumes)."""
        first = next(iter(self.modalities.values()))
        return _ids_from_pattern(self.root, first.files)

    # --- splits ------------------------------------------------------------------------------
    def split_ids(self, split: str) -> list[str]:
        """The file ids of a split: with a ``volume`` section, case ids, so that the slices of one
        case always fall in the same split (the dataset expands them to slice ids)."""
        if split not in self.splits:
            raise UserError(
                f"no split {split!r}; the spec has: {', '.join(self.splits)} (name one in the "
                "config's `eval.split` or with --split, or add the split here)",
                file=self.path,
                field="splits",
            )
        all_ids = self.all_ids()
        if not all_ids:
            first = next(iter(self.modalities))
            raise UserError(
                f"no files match {self.modalities[first].files!r} under {self.root}",
                file=self.path,
                field=f"modalities.{first}.files",
            )
        rule = self.splits[split]
        where = f"splits.{split}"
        if rule["ids"] is not None:
            ids = _read_id_list(self._id_list_path(rule["ids"]), self.path, f"{where}.ids")
            unknown = sorted(set(ids) - set(all_ids))
            # A few ids without files are reported file by file (which file is missing) by the
            # dataset and the scan; a list where nothing matches is the wrong list.
            slice_ids = self.volume is not None and any(SLICE_SEPARATOR in i for i in unknown)
            if unknown and (slice_ids or len(unknown) == len(set(ids))):
                hint = (
                    f" (list case ids, not slice ids with {SLICE_SEPARATOR!r}: a split takes whole cases)"
                    if self.volume is not None and any(SLICE_SEPARATOR in i for i in unknown)
                    else ""
                )
                raise UserError(
                    f"{len(unknown)} ids have no files, e.g. {unknown[:3]}{hint}",
                    file=self.path,
                    field=f"{where}.ids",
                )
        elif rule["pattern"] is not None:
            regex = re.compile(rule["pattern"])
            ids = [i for i in all_ids if regex.search(i)]
        else:
            ids = self._fraction_split(split, all_ids)
        if not ids:
            raise UserError("the split is empty", file=self.path, field=where)
        return ids

    def _id_list_path(self, name: str) -> Path:
        """An id list is looked up next to the spec file first, then under ``root``."""
        beside_spec = self.path.parent / name
        return (
            beside_spec
            if beside_spec.is_file() or not (self.root / name).is_file()
            else self.root / name
        )

    def _fraction_split(self, split: str, all_ids: list[str]) -> list[str]:
        """Fraction splits share one seeded shuffle of the ids not claimed by other splits and
        take consecutive shares of it in the order they are declared, so they never overlap."""
        claimed: set[str] = set()
        fraction_splits = []
        for name, rule in self.splits.items():
            if rule["fraction"] is not None:
                fraction_splits.append(name)
            elif name != split:
                claimed.update(self.split_ids(name))
        pool = sorted(set(all_ids) - claimed)
        random.Random(self.splits[fraction_splits[0]]["seed"]).shuffle(pool)
        start = 0.0
        for name in fraction_splits:
            stop = start + self.splits[name]["fraction"]
            if name == split:
                return pool[round(start * len(pool)) : round(stop * len(pool))]
            start = stop
        raise AssertionError("unreachable")

    @property
    def context(self) -> int:
        """Slices of 2.5-D context on each side (0 without a ``volume`` section)."""
        return self.volume.context if self.volume is not None else 0

    def input_channels(self) -> dict[str, int]:
        """``{modality: channels the network sees}``: the file's channels × (2·context + 1)."""
        return {m.name: m.channels * (2 * self.context + 1) for m in self.modalities.values()}

    def describe(self) -> dict:
        """Name, modalities, tasks and classes: what a checkpoint keeps to check a later spec."""
        return {
            "modalities": self.input_channels(),
            "tasks": {t.name: list(t.classes) for t in self.tasks.values()},
        }


#: Integer label arrays whose values span less than this use a lookup table instead of a sort.
_DENSE_RANGE = 1 << 16


def unique_values(raw: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """``(sorted unique values, thunk giving each element's index into them)``.

    Integer labels with a small value range (every label map we know: 0..255, MyoPS' 0..2221)
    take an O(n) bincount path, which matters for whole volumes; anything else uses ``np.unique``.
    """
    if raw.size and np.issubdtype(raw.dtype, np.integer):
        low, high = int(raw.min()), int(raw.max())
        if high - low < _DENSE_RANGE:
            offset = raw.astype(np.int64) - low
            present = np.flatnonzero(np.bincount(offset.ravel(), minlength=high - low + 1))
            position = np.zeros(high - low + 1, dtype=np.int64)
            position[present] = np.arange(len(present))
            return (present + low).astype(raw.dtype), lambda: position[offset]
    uniques, inverse = np.unique(raw, return_inverse=True)
    return uniques, lambda: inverse.reshape(raw.shape)


def _ids_from_pattern(root: Path, pattern: str) -> list[str]:
    # Braces are not glob syntax, so escaping keeps "{id}" intact for the replacement.
    glob_pattern = glob.escape(str(root / pattern)).replace("{id}", "*")
    head, _, tail = pattern.partition("{id}")
    regex = re.compile(
        re.escape(head)
        + r"(?P<id>[^/]+?)"
        + re.escape(tail).replace(re.escape("{id}"), r"(?P=id)")
        + "$"
    )
    ids = set()
    for path in glob.glob(glob_pattern):
        rel = Path(path).relative_to(root).as_posix()
        match = regex.match(rel)
        if match:
            ids.add(match.group("id"))
    return sorted(ids)


def _read_id_list(path: Path, spec: Path, field_name: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"id list {path} not found", file=spec, field=field_name)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


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


def yaml_problem(exc: yaml.YAMLError) -> tuple[str | None, str]:
    """``("line L, column C", one-line reason)`` of a YAML syntax error (1-based, as editors)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if mark is None or problem is None:
        return None, " ".join(str(exc).split())
    reason = f"{problem} ({context})" if context else problem
    return f"line {mark.line + 1}, column {mark.column + 1}", reason


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _NoDuplicatesLoader(yaml.SafeLoader):
    """PyYAML's safe loader, recording each key repeated within one mapping (where YAML readers
    silently keep the last) instead of dropping the earlier one without a word.

    Keys brought in by a merge (``<<: *base``) and then set again are YAML's way of overriding,
    not duplicates. The keys checked are those each mapping had as written: PyYAML flattens
    merges into the merged mapping's node in place, sometimes before that mapping's own turn.
    """

    def __init__(self, stream):
        super().__init__(stream)
        #: ``(dotted field of the mapping, first key node, repeated key node)``.
        self.duplicates: list[tuple[str, yaml.Node, yaml.Node]] = []
        #: ``id(mapping node) -> (its dotted field, its key nodes as written)``.
        self._written: dict[int, tuple[str, list[yaml.Node]]] = {}

    def construct_document(self, node):
        self._written = {
            id(mapping): (where, [k for k, _ in mapping.value if k.tag != _MERGE_TAG])
            for mapping, where in _mappings(node)
        }
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        where, keys = self._written.pop(id(node), ("", []))
        seen: dict = {}
        for key_node in keys:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                self.duplicates.append((where, first, key_node))
        return super().construct_mapping(node, deep=deep)


def _key_text(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else "?"


def _mappings(root: yaml.Node) -> list[tuple[yaml.MappingNode, str]]:
    """Every mapping node of a composed YAML document with its dotted field (``train``,
    ``train.augment[0].flip``; ``""`` for the top level), in document order."""
    found: list[tuple[yaml.MappingNode, str]] = []
    visited: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, where = todo.pop()
        if id(node) in visited:  # an alias: the first place it appears names it
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            found.append((node, where))
            children = [
                (value, f"{where}.{_key_text(key)}" if where else _key_text(key))
                for key, value in node.value
            ]
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        else:
            continue
        todo += reversed(children)  # popped in document order
    return found


def parse_yaml(text: str, file: str | Path, *, field: str = ""):
    """``yaml.safe_load(text)``, except that a key repeated within one mapping is an error: one
    :class:`UserError` per repetition, naming ``file``, the dotted field (below ``field``, e.g. an
    override's key) and where both are written.

    Raises:
        ConfigError: the duplicates; ``yaml.YAMLError`` for a syntax error, as ``safe_load``.
    """
    loader = _NoDuplicatesLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if not loader.duplicates:
        return data
    one_line = "\n" not in text.strip()
    problems = []
    for where, first, again in sorted(
        loader.duplicates, key=lambda d: (d[2].start_mark.line, d[2].start_mark.column)
    ):
        a, b = first.start_mark, again.start_mark
        if one_line:
            at = f"first at column {a.column + 1}, again at column {b.column + 1}"
        elif a.line == b.line:
            at = (
                f"first at line {a.line + 1}, column {a.column + 1}, again at column {b.column + 1}"
            )
        else:
            at = f"first at line {a.line + 1}, again at line {b.line + 1}"
        dotted = ".".join(part for part in (field, where, _key_text(first)) if part)
        problems.append(
            UserError(
                f"duplicate key: {at}; keep one of them (a YAML reader would silently take the "
                "last)",
                file=file,
                field=dotted,
            )
        )
    raise ConfigError(problems)


def load_yaml(path: Path) -> dict:
    """A YAML file (a config or a data spec) as a mapping; a key given twice in one mapping is an
    error (see :class:`_NoDuplicatesLoader`)."""
    if path.is_dir():
        raise UserError("is a folder; give a YAML file (a config or a data spec)", file=path)
    if not path.is_file():
        raise UserError("file not found", file=path)
    try:
        data = parse_yaml(path.read_text(), path)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"not a text file ({exc.reason} at byte {exc.start}); give a YAML config or data spec",
            file=path,
        ) from exc
    except yaml.YAMLError as exc:
        where, message = yaml_problem(exc)
        raise UserError(f"not valid YAML: {message}", file=path, field=where) from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise UserError(
            f"expected a YAML mapping at the top level (`key: value` lines), got {got}", file=path
        )
    return data


def load_data_spec(path: str | Path, *, data_root: str | Path | None = None) -> DataSpec:
    """Load and validate a data spec; ``data_root`` overrides its ``root``."""
    path = Path(path)
    if data_root is not None:
        check_data_root(Path(data_root))
    raw = validate(DATA_SPEC_SCHEMA, load_yaml(path), file=str(path))
    return data_spec_from_dict(raw, path, data_root=data_root)


def check_data_root(root: Path) -> None:
    """``--data-root`` must be a folder: it replaces the data spec's ``root``."""
    what = "is a file, not a folder" if root.is_file() else None
    if what is None and not root.exists():
        what = "folder not found"
    if what is not None:
        raise UserError(
            f"{what}; --data-root names the folder that replaces the data spec's `root` (the "
            "folder its file patterns are relative to)",
            file=root,
            field="--data-root",
        )


def data_spec_from_dict(raw: dict, path: Path, *, data_root: str | Path | None = None) -> DataSpec:
    """Build a DataSpec from an already schema-validated mapping (e.g. one stored in a checkpoint)."""
    raw = validate(DATA_SPEC_SCHEMA, raw, file=str(path))
    problems: list[UserError] = []
    _check_cross_references(raw, problems)
    problems += _check_volume_formats(raw)
    if problems:
        for problem in problems:
            problem.file = str(path)
        raise ConfigError(problems)
    root = (
        Path(data_root)
        if data_root is not None
        else Path(os.path.normpath(path.parent / raw["root"]))
    )
    return DataSpec(
        name=raw["name"] or path.stem,
        path=path,
        root=root,
        modalities={n: _modality_spec(n, m) for n, m in raw["modalities"].items()},
        tasks={
            n: TaskSpec(
                name=n,
                labels=t["labels"],
                classes=tuple(t["classes"]),
                values=t["values"],
                threshold=t["threshold"],
                ignore=tuple(t["ignore"]),
                optional=t["optional"],
                annotated_on=tuple(t["annotated_on"]),
                colors=t["colors"],
            )
            for n, t in raw["tasks"].items()
        },
        splits=raw["splits"],
        raw=raw,
        volume=VolumeSpec.from_dict(raw["volume"]) if raw["volume"] is not None else None,
    )


def _modality_spec(name: str, raw: dict) -> ModalitySpec:
    how = raw["normalize"]
    if isinstance(how, dict):
        how = {k: v for k, v in how.items() if v is not None}
    clip = raw["clip_percentiles"]
    return ModalitySpec(
        name=name,
        files=raw["files"],
        channels=raw["channels"],
        normalize=how,
        clip_percentiles=tuple(clip) if clip is not None else None,
    )
