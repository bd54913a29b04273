"""Scan every file a data spec references and report *all* problems at once.

``inspect`` and ``train`` (unless ``--skip-scan``) run it before any work: every file exists and
decodes; channels match the spec; all modalities and labels of one id have one size; every raw
label value has a class (unmapped values listed with pixel counts and the files holding them);
float images hold no NaN/Inf; splits are not empty; ids are not duplicated or shared between
splits (a warning); every task has a labelled sample. Files are read in parallel threads.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmseg_heads.data.readers import read_array
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.errors import ConfigError, UserError


@dataclass
class Problem:
    message: str
    field: str | None = None
    severity: str = "error"  # or "warning"


@dataclass
class _IdReport:
    problems: list[Problem] = field(default_factory=list)
    unmapped: dict[str, Counter] = field(default_factory=dict)  # task -> raw value -> pixels
    unmapped_files: dict[str, set] = field(default_factory=dict)
    labelled: set[str] = field(default_factory=set)


@dataclass
class ScanResult:
    problems: list[Problem]
    ids: dict[str, list[str]]  # split -> file ids

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def raise_errors(self, spec: DataSpec) -> None:
        """One :class:`ConfigError` listing every error (exit status 2 in the CLI)."""
        if self.errors:
            raise ConfigError(
                [UserError(p.message, file=spec.path, field=p.field) for p in self.errors]
            )


def _split_ids(spec: DataSpec) -> tuple[dict[str, list[str]], list[Problem]]:
    ids, problems = {}, []
    for split in spec.splits:
        try:
            ids[split] = spec.split_ids(split)
        except UserError as exc:
            problem = Problem(exc.message, exc.field)
            if problem not in problems:  # e.g. "no files match", the same for every split
                problems.append(problem)
            continue
        duplicated = sorted(i for i, n in Counter(ids[split]).items() if n > 1)
        if duplicated:
            problems.append(
                Problem(f"ids listed twice: {duplicated[:5]}", f"splits.{split}", "warning")
            )
    names = list(ids)
    for a_index, a in enumerate(names):
        for b in names[a_index + 1 :]:
            shared = sorted(set(ids[a]) & set(ids[b]))
            if shared:
                problems.append(
                    Problem(
                        f"{len(shared)} ids are in both {a!r} and {b!r}, e.g. {shared[:3]}",
                        "splits",
                        "warning",
                    )
                )
    return ids, problems


def _read(path: Path, where: str, report: _IdReport) -> np.ndarray | None:
    try:
        return read_array(path)
    except UserError as exc:
        report.problems.append(Problem(f"{path}: {exc.message}", where))
        return None


def _grid(shape: tuple, spec: DataSpec) -> tuple:
    """The size files of one id must share: H×W of an image, or the volume's 3-D grid."""
    return tuple(shape[:3] if spec.volume is not None else shape[:2])


def _scan_id(spec: DataSpec, sample_id: str) -> _IdReport:
    """Every check of one file id; collects problems instead of stopping at the first."""
    report = _IdReport()
    sizes: dict[str, tuple] = {}
    fields: dict[str, str] = {}  # sizes' key -> the spec field of that file
    for name, modality in spec.modalities.items():
        path, where = spec.modality_file(name, sample_id), f"modalities.{name}.files"
        if not path.is_file():
            report.problems.append(Problem(f"file not found: {path} (id {sample_id!r})", where))
            continue
        array = _read(path, where, report)
        if array is None:
            continue
        if spec.volume is not None and array.ndim < 3:
            report.problems.append(_flat_in_volume(path, array, where))
            continue
        channels = 1 if array.ndim == (3 if spec.volume is not None else 2) else array.shape[-1]
        if channels != modality.channels:
            report.problems.append(
                Problem(
                    f"{path} has {channels} channels but the spec says {modality.channels}",
                    f"modalities.{name}.channels",
                )
            )
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            report.problems.append(Problem(f"{path} holds NaN or infinite values", where))
        sizes[f"{name} ({path.name})"] = _grid(array.shape, spec)
        fields[f"{name} ({path.name})"] = where
    for name, task in spec.tasks.items():
        path, where = spec.label_file(name, sample_id), f"tasks.{name}.labels"
        if not path.is_file():
            if not task.optional:
                report.problems.append(
                    Problem(f"label file not found: {path} (id {sample_id!r})", where)
                )
            continue
        raw = _read(path, where, report)
        if raw is None:
            continue
        if spec.volume is not None and raw.ndim < 3:
            report.problems.append(_flat_in_volume(path, raw, where))
            continue
        report.labelled.add(name)
        sizes[f"{name} labels ({path.name})"] = _grid(raw.shape, spec)
        fields[f"{name} labels ({path.name})"] = where
        if spec.volume is None and raw.ndim > 2 and np.squeeze(raw).ndim != 2:
            colour = raw.ndim == 3 and raw.shape[2] in (3, 4)
            what = "a colour image" if colour else f"an array of shape {raw.shape}"
            report.problems.append(
                Problem(
                    f"{path} is {what}; labels must be single-channel index maps (save a palette "
                    "or grayscale PNG)",
                    where,
                )
            )
            continue
        if task.threshold is None:
            values, counts = np.unique(raw, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                if value not in task.ignore and task._lookup(value) is None:
                    report.unmapped.setdefault(name, Counter())[value] += count
                    report.unmapped_files.setdefault(name, set()).add(str(path))
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in sizes.items())
        # Name the field of the first file whose size differs from the most common one.
        common = Counter(sizes.values()).most_common(1)[0][0]
        odd = next(fields[k] for k, v in sizes.items() if v != common)
        report.problems.append(Problem(f"id {sample_id!r}: files differ in size: {listing}", odd))
    return report


def _flat_in_volume(path: Path, array: np.ndarray, where: str) -> Problem:
    return Problem(
        f"{path} is 2-D (shape {array.shape}) but the `volume` section slices 3-D files "
        "(remove `volume` for 2-D images)",
        where,
    )


def scan(spec: DataSpec, *, threads: int | None = None) -> ScanResult:
    """Check every id of every split; returns all problems (errors and warnings)."""
    ids, problems = _split_ids(spec)
    every_id = sorted({i for split_ids in ids.values() for i in split_ids})
    threads = threads or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(threads) as pool:
        reports = list(pool.map(lambda i: _scan_id(spec, i), every_id))
    unmapped: dict[str, Counter] = defaultdict(Counter)
    files: dict[str, set] = defaultdict(set)
    labelled: dict[str, set] = defaultdict(set)
    for sample_id, report in zip(every_id, reports, strict=True):
        problems += report.problems
        for task, counter in report.unmapped.items():
            unmapped[task].update(counter)
            files[task] |= report.unmapped_files[task]
        for task in report.labelled:
            labelled[task].add(sample_id)
    for task, counter in unmapped.items():
        spec_task = spec.tasks[task]
        values = ", ".join(f"{v} ({n} px)" for v, n in sorted(counter.items()))
        shown = sorted(files[task])
        hint = (
            "add them to `values`" if spec_task.values else "give a `values` map or a `threshold`"
        )
        problems.append(
            Problem(
                f"raw label values with no class: {values}; in {len(shown)} files, e.g. "
                f"{', '.join(shown[:3])} (classes 0..{spec_task.num_classes - 1}); {hint}",
                f"tasks.{task}.values",
            )
        )
    for split, split_ids in ids.items():
        for task in spec.tasks:
            if split_ids and not labelled[task] & set(split_ids):
                problems.append(
                    Problem(
                        f"no sample of split {split!r} has a label for task {task!r}",
                        f"tasks.{task}.labels",
                    )
                )
    return ScanResult(problems, ids)
