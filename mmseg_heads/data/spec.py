"""Data specs: which files hold each modality and each task's labels, and how to read them.

A data spec is a YAML file (see ``docs/data_spec.md``); :func:`load_data_spec` validates it against
:data:`DATA_SPEC_SCHEMA` and returns a :class:`DataSpec`. Paths are relative to the spec file.
"""

from __future__ import annotations

import glob
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.schema import Any_, Field, ListOf, MapOf, OneOf, Struct, validate

#: Label value of pixels that no loss and no metric sees (padding, ``ignore`` raw values).
IGNORE_INDEX = 255
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
                Struct({"mean": ListOf(Field(float)), "std": ListOf(Field(float))}),
                Struct({"scale": Field(float)}),
            ],
            default="zscore",
            doc="per-image normalisation: zscore, minmax, imagenet, none, {mean, std} or {scale}",
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
    }
)


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    files: str
    channels: int = 1
    normalize: str | dict = "zscore"


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def map_labels(self, raw: np.ndarray, file: str | Path) -> np.ndarray:
        """Raw label values -> class indices (``IGNORE_INDEX`` for ignored pixels).

        Raises a :class:`UserError` naming ``file`` for a value with no mapping or a class index
        out of range: never a silent remap to ignore.
        """
        if raw.ndim == 3 and raw.shape[2] in (3, 4):
            raise UserError(
                f"task {self.name!r}: label image has {raw.shape[2]} colour channels; labels must be "
                "single-channel index maps (save a palette or grayscale PNG)",
                file=file,
            )
        if raw.ndim != 2:
            raw = np.squeeze(raw)
        ignored = np.isin(raw, self.ignore) if self.ignore else np.zeros(raw.shape, bool)
        if self.threshold is not None:
            out = (raw > self.threshold).astype(np.int64)
        else:
            uniques, inverse = np.unique(raw, return_inverse=True)
            lut = np.empty(len(uniques), dtype=np.int64)
            unmapped = []
            for i, value in enumerate(uniques.tolist()):
                if value in self.ignore:
                    lut[i] = IGNORE_INDEX
                    continue
                target = self._lookup(value)
                if target is None:
                    unmapped.append(value)
                else:
                    lut[i] = target
            if unmapped:
                hint = (
                    "add them to `values`"
                    if self.values
                    else "give a `values` map or a `threshold`"
                )
                raise UserError(
                    f"task {self.name!r}: raw label values {unmapped} have no class "
                    f"(classes 0..{self.num_classes - 1}); {hint}",
                    file=file,
                )
            out = lut[inverse.reshape(raw.shape)]
        out[ignored] = IGNORE_INDEX
        return out

    def _lookup(self, value) -> int | None:
        if self.values is None:
            index = int(value) if float(value).is_integer() else None
            return index if index is not None and 0 <= index < self.num_classes else None
        target = self.values.get(value, self.values.get(int(value), self.values.get("other")))
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

    # --- files -------------------------------------------------------------------------------
    def modality_file(self, modality: str, sample_id: str) -> Path:
        return self.root / self.modalities[modality].files.format(id=sample_id)

    def label_file(self, task: str, sample_id: str) -> Path:
        return self.root / self.tasks[task].labels.format(id=sample_id)

    def all_ids(self) -> list[str]:
        """Ids found on disk through the first modality's file pattern."""
        first = next(iter(self.modalities.values()))
        return _ids_from_pattern(self.root, first.files)

    # --- splits ------------------------------------------------------------------------------
    def split_ids(self, split: str) -> list[str]:
        if split not in self.splits:
            raise UserError(
                f"no split {split!r}; the spec has: {', '.join(self.splits)}",
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
            if unknown:
                raise UserError(
                    f"{len(unknown)} ids have no files, e.g. {unknown[:3]}",
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

    def describe(self) -> dict:
        """Name, modalities, tasks and classes: what a checkpoint keeps to check a later spec."""
        return {
            "modalities": {m.name: m.channels for m in self.modalities.values()},
            "tasks": {t.name: list(t.classes) for t in self.tasks.values()},
        }


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


def _check_normalization(name: str, modality: dict) -> list[UserError]:
    how, channels = modality["normalize"], modality["channels"]
    where = f"modalities.{name}.normalize"
    if how == "imagenet" and channels != 3:
        return [
            UserError(
                f"imagenet statistics are for 3-channel RGB; this modality has {channels}",
                field=where,
            )
        ]
    if isinstance(how, dict) and "mean" in how:
        for key in ("mean", "std"):
            if len(how[key]) not in (1, channels):
                return [
                    UserError(
                        f"needs 1 or {channels} values, got {len(how[key])}",
                        field=f"{where}.{key}",
                    )
                ]
        if any(v <= 0 for v in how["std"]):
            return [UserError("std values must be > 0", field=f"{where}.std")]
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


def load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError("file not found", file=path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML: {exc}", file=path) from exc
    if not isinstance(data, dict):
        raise UserError("expected a YAML mapping at the top level", file=path)
    return data


def load_data_spec(path: str | Path, *, data_root: str | Path | None = None) -> DataSpec:
    """Load and validate a data spec; ``data_root`` overrides its ``root``."""
    path = Path(path)
    raw = validate(DATA_SPEC_SCHEMA, load_yaml(path), file=str(path))
    return data_spec_from_dict(raw, path, data_root=data_root)


def data_spec_from_dict(raw: dict, path: Path, *, data_root: str | Path | None = None) -> DataSpec:
    """Build a DataSpec from an already schema-validated mapping (e.g. one stored in a checkpoint)."""
    raw = validate(DATA_SPEC_SCHEMA, raw, file=str(path))
    problems: list[UserError] = []
    _check_cross_references(raw, problems)
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
        modalities={n: ModalitySpec(name=n, **m) for n, m in raw["modalities"].items()},
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
            )
            for n, t in raw["tasks"].items()
        },
        splits=raw["splits"],
        raw=raw,
    )
