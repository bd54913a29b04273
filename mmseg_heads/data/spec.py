"""Data specs: which files hold each modality and each task's labels, and how to read them.

A data spec is a YAML file (see ``docs/data_spec.md``); :func:`load_data_spec` validates it against
:data:`DATA_SPEC_SCHEMA` and returns a :class:`DataSpec`. Paths are relative to the spec file.

This module holds the spec's dataclasses and its loading; the parts live by concept in
:mod:`~mmseg_heads.data.spec_schema` (the schema), :mod:`~mmseg_heads.data.spec_checks` (the
cross-field checks), :mod:`~mmseg_heads.data.labels` (label mapping),
:mod:`~mmseg_heads.data.splits` (splits), :mod:`~mmseg_heads.data.patterns` (``{id}`` patterns,
id discovery) and :mod:`~mmseg_heads.data.yaml_io` (the YAML loader), whose public names are
importable from here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmseg_heads.data import labels as label_mapping
from mmseg_heads.data import splits as split_rules
from mmseg_heads.data.labels import IGNORE_INDEX, JPEG_EXTENSIONS, unique_values
from mmseg_heads.data.patterns import ids_from_pattern
from mmseg_heads.data.spec_checks import cross_field_problems
from mmseg_heads.data.spec_schema import (
    DATA_SPEC_SCHEMA,
    KEEP_RULE,
    MODALITY_SCHEMA,
    NORMALIZATIONS,
    SPLIT_SCHEMA,
    TASK_SCHEMA,
    VOLUME_SCHEMA,
)
from mmseg_heads.data.splits import SLICE_SEPARATOR
from mmseg_heads.data.yaml_io import load_yaml, parse_yaml, yaml_problem
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.palette import RGB, as_rgb, task_palette
from mmseg_heads.schema import validate

__all__ = [
    "DATA_SPEC_SCHEMA",
    "IGNORE_INDEX",
    "JPEG_EXTENSIONS",
    "KEEP_RULE",
    "MODALITY_SCHEMA",
    "NORMALIZATIONS",
    "SLICE_SEPARATOR",
    "SPLIT_SCHEMA",
    "TASK_SCHEMA",
    "VOLUME_SCHEMA",
    "DataSpec",
    "ModalitySpec",
    "TaskSpec",
    "VolumeSpec",
    "check_data_root",
    "data_spec_from_dict",
    "load_data_spec",
    "load_yaml",
    "parse_yaml",
    "unique_values",
    "yaml_problem",
]


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
    #: ``{parent task: classes}``: this task's foreground lies inside those classes of the parent.
    inside: dict[str, tuple[str, ...]] | None = None
    #: The spec's ``colors``: class name -> ``[r, g, b]`` or ``"#rrggbb"``, as validated.
    colors: dict | None = None
    #: ``index`` (raw values are classes, through ``values``/``threshold``) or ``colour`` (RGB
    #: label images, whose colours are classes through ``colors``).
    label_format: str = "index"
    #: With ``label_format: colour``: colours whose pixels get ``IGNORE_INDEX``.
    ignore_colors: tuple[RGB, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette(self) -> list[RGB]:
        """One ``(r, g, b)`` per class: the spec's ``colors``, the default palette elsewhere."""
        return task_palette(self.classes, self.colors)

    def map_labels(self, raw: np.ndarray, file: str | Path) -> np.ndarray:
        """Raw label values of one 2-D label image -> class indices (``IGNORE_INDEX`` for ignored
        pixels); see :func:`~mmseg_heads.data.labels.map_labels`."""
        return label_mapping.map_labels(self, raw, file)

    def map_values(self, raw: np.ndarray, file: str | Path) -> np.ndarray:
        """Raw label values -> class indices, element-wise, for an array of any shape (a whole
        label volume too); see :func:`~mmseg_heads.data.labels.map_values`."""
        return label_mapping.map_values(self, raw, file)

    def class_table(self, uniques: np.ndarray, file: str | Path) -> np.ndarray:
        """The class index of each raw value in ``uniques``; see
        :func:`~mmseg_heads.data.labels.class_table`."""
        return label_mapping.class_table(self, uniques, file)

    def unmapped_hint(self, files: list[str | Path]) -> str:
        """How to fix raw label values with no class found in ``files`` (label files)."""
        return label_mapping.unmapped_hint(self, files)

    def _lookup(self, value) -> int | None:
        return label_mapping.lookup(self, value)


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
        return ids_from_pattern(self.root, first.files)

    # --- splits ------------------------------------------------------------------------------
    def split_ids(self, split: str) -> list[str]:
        """The file ids of a split: with a ``volume`` section, case ids, so that the slices of one
        case always fall in the same split (the dataset expands them to slice ids); see
        :func:`~mmseg_heads.data.splits.split_ids`."""
        return split_rules.split_ids(self, split)

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

    def nesting(self) -> tuple[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], ...]:
        """The ``inside`` rules as ``((task, ((parent, class indices), …)), …)``, parents before
        the tasks inside them (so a task is held inside its parent's nested prediction)."""
        order: list[str] = []

        def visit(name: str) -> None:
            for parent in self.tasks[name].inside or {}:
                visit(parent)
            if name not in order:
                order.append(name)

        for name in self.tasks:
            visit(name)
        return tuple(
            (
                name,
                tuple(
                    (parent, tuple(self.tasks[parent].classes.index(c) for c in classes))
                    for parent, classes in self.tasks[name].inside.items()
                ),
            )
            for name in order
            if self.tasks[name].inside
        )

    def preprocessing(self) -> dict:
        """How files become network inputs: per modality its channels, normalisation and clip
        percentiles, and the 2.5-D context (recorded in reports)."""
        return {
            "modalities": {
                m.name: {
                    "channels": m.channels,
                    "normalize": m.normalize,
                    "clip_percentiles": list(m.clip_percentiles) if m.clip_percentiles else None,
                }
                for m in self.modalities.values()
            },
            "context": self.context,
        }


def preprocessing_differences(trained: DataSpec, other: DataSpec) -> list[str]:
    """One sentence per setting in which ``other`` prepares a shared modality differently from
    the spec a model was ``trained`` with (a model sees values unlike those it learnt from)."""
    ours, theirs = trained.preprocessing(), other.preprocessing()
    out = []
    for name, here in theirs["modalities"].items():
        then = ours["modalities"].get(name)
        for key in ("channels", "normalize", "clip_percentiles") if then else ():
            if here[key] != then[key]:
                out.append(
                    f"modalities.{name}.{key} is {here[key]!r} in {other.path} but was "
                    f"{then[key]!r} in training"
                )
    if theirs["context"] != ours["context"]:
        out.append(
            f"volume.context is {theirs['context']} in {other.path} but was {ours['context']} "
            "in training"
        )
    return out


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
    problems = cross_field_problems(raw)
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
                inside={k: tuple(v) for k, v in t["inside"].items()} if t["inside"] else None,
                colors=t["colors"],
                label_format=t["label_format"],
                ignore_colors=tuple(as_rgb(c) for c in t["ignore_colors"]),
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
