"""Scan every file a data spec references and report *all* problems at once.

``inspect`` and ``train`` (unless ``--skip-scan``) run it before any work: every file exists and
decodes; channels match the spec; all modalities and labels of one id have one size; every raw
label value has a class (unmapped values listed with pixel counts and the files holding them), or
with ``label_format: colour`` every label image is opaque RGB and every colour has a class;
float images hold no NaN/Inf; splits are not empty; ids are not duplicated or shared between
splits (a warning); every task has a labelled sample.

Each file is read once (a label file that several tasks share too), in parallel threads, into a
few facts (:class:`~mmseg_heads.data.scan_cache.FileFacts`: shape, dtype, finiteness, label
value or colour histogram; :mod:`mmseg_heads.data.scan_read`); the checks here run on those
facts (a colour label file's: :mod:`mmseg_heads.data.colour_checks`). The facts are cached between
runs (:mod:`mmseg_heads.data.scan_cache`), so a second scan of unchanged files reads none of them.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmseg_heads.data.checks import (
    Problem,
    channel_mismatch,
    missing_label_file,
    missing_modality_file,
    size_mismatch,
)
from mmseg_heads.data.colour_checks import colour_file_problems, unmapped_colours_problem
from mmseg_heads.data.scan_cache import FileFacts, open_cache
from mmseg_heads.data.scan_read import Read, files_to_read, read_all
from mmseg_heads.data.spec import DataSpec, TaskSpec
from mmseg_heads.errors import ConfigError, UserError


@dataclass
class _IdReport:
    problems: list[Problem] = field(default_factory=list)
    # task -> raw value (a colour task's: packed colour) -> pixels
    unmapped: dict[str, Counter] = field(default_factory=dict)
    unmapped_files: dict[str, set] = field(default_factory=dict)
    labelled: set[str] = field(default_factory=set)
    flat: dict[str, list] = field(default_factory=dict)  # field -> [(2-D file, shape)] (volumes)


@dataclass
class ScanResult:
    problems: list[Problem]
    ids: dict[str, list[str]]  # split -> file ids
    facts: dict[Path, FileFacts] = field(default_factory=dict)  # every file that was read

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def raise_errors(self, spec: DataSpec) -> None:
        """One :class:`ConfigError` listing every error (exit status 2 in the CLI)."""
        if self.errors:
            raise ConfigError([p.error(spec.path) for p in self.errors])

    def class_pixels(self, spec: DataSpec, task: str, ids: list[str]) -> tuple[int, Counter] | None:
        """``(labelled samples, pixels per class index)`` of ``task`` over the files of ``ids``
        (case ids for volumes, each giving one sample per slice), from the label histograms the
        scan took, without reading a file.

        ``None`` when the histograms cannot give it: a spec that keeps only some slices of each
        volume (``keep: labelled``), or a label file whose histogram was not kept.
        """
        if spec.volume is not None and spec.volume.keep != "all":
            return None
        spec_task = spec.tasks[task]
        counter: Counter = Counter()
        labelled = 0
        for sample_id in ids:
            path = spec.label_file(task, sample_id)
            if not path.is_file():
                continue
            facts = self.facts.get(path)
            colour = spec_task.label_format == "colour"
            histogram = None if facts is None else facts.colours if colour else facts.values
            if histogram is None:
                return None
            labelled += 1 if spec.volume is None else facts.shape[spec.volume.slice_axis]
            raw = np.array([value for value, _ in histogram])
            classes = spec_task.class_table(raw, path)
            for index, (_, pixels) in zip(classes.tolist(), histogram, strict=True):
                counter[index] += pixels
        return labelled, counter

    def plane_sizes(self, spec: DataSpec, split: str) -> list[tuple[int, int]]:
        """``(height, width)`` of the 2-D samples of ``split``'s files, from the first modality's
        facts (one entry per file: a volume's slices share its in-plane size)."""
        modality = next(iter(spec.modalities))
        sizes = []
        for sample_id in self.ids.get(split, []):
            facts = self.facts.get(spec.modality_file(modality, sample_id))
            if facts is None:
                continue
            if spec.volume is None:
                sizes.append(tuple(facts.shape[:2]))
            else:
                plane = [
                    n for axis, n in enumerate(facts.shape[:3]) if axis != spec.volume.slice_axis
                ]
                sizes.append(tuple(plane))
        return sizes


def crop_warning(sizes: list[tuple[int, int]], crop: int, resize: int | list | None) -> str | None:
    """A warning when the training crop is larger than some training images (after ``resize``):
    their crops are mostly padding, which no loss sees, so those steps learn little."""

    def shorter(size: tuple[int, int]) -> float:
        if resize is None:
            return min(size)
        return resize if isinstance(resize, int) else resize[1]

    small = [size for size in sizes if shorter(size) < crop]
    if not small:
        return None
    smallest = min(small, key=min)
    scaled = "" if resize is None else " after train.resize"
    return (
        f"the crop ({crop}²) is larger than {len(small)} of {len(sizes)} training images{scaled} "
        f"(smallest {smallest[0]}×{smallest[1]}): their crops are padded with ignore; set "
        "train.resize to scale them up, or a smaller train.crop"
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


def _grid(shape: tuple, spec: DataSpec) -> tuple:
    """The size files of one id must share: H×W of an image, or the volume's 3-D grid."""
    return tuple(shape[:3] if spec.volume is not None else shape[:2])


def _scan_id(spec: DataSpec, sample_id: str, read: dict[Path, Read]) -> _IdReport:
    """Every check of one file id, on the facts read; collects problems instead of stopping."""
    report = _IdReport()
    sizes: list[tuple[str, tuple, str]] = []  # (name in a message, grid, spec field) per file
    undecodable: set[Path] = set()  # reported once, under the first field that names the file

    def decoded(path: Path, where: str) -> FileFacts | None:
        result = read[path]
        if isinstance(result, str):
            if path not in undecodable:
                report.problems.append(Problem(result, where))
                undecodable.add(path)
            return None
        return result

    for name, modality in spec.modalities.items():
        path, where = spec.modality_file(name, sample_id), f"modalities.{name}.files"
        if read[path] is None:
            report.problems.append(missing_modality_file(path, sample_id, name, exists=False))
            continue
        facts = decoded(path, where)
        if facts is None:
            continue
        shape = facts.shape
        if spec.volume is not None and len(shape) < 3:
            report.flat.setdefault(where, []).append((path, shape))
            continue
        channels = 1 if len(shape) == (3 if spec.volume is not None else 2) else shape[-1]
        problem = channel_mismatch(path, channels, modality, in_message=True)
        if problem is not None:
            report.problems.append(problem)
        if facts.finite is False:
            report.problems.append(Problem(f"{path} holds NaN or infinite values", where))
        sizes.append((f"{name} ({path.name})", _grid(shape, spec), where))
    for name, task in spec.tasks.items():
        path, where = spec.label_file(name, sample_id), f"tasks.{name}.labels"
        if read[path] is None:
            problem = missing_label_file(path, sample_id, task, exists=False, fix=False)
            if problem is not None:
                report.problems.append(problem)
            continue
        facts = decoded(path, where)
        if facts is None:
            continue
        shape = facts.shape
        report.labelled.add(name)  # a label file of the wrong shape is reported on its own
        if spec.volume is not None and len(shape) < 3:
            report.flat.setdefault(where, []).append((path, shape))
            continue
        sizes.append((f"{name} labels ({path.name})", _grid(shape, spec), where))
        if task.label_format == "colour":
            colour_problems, unmapped = colour_file_problems(task, path, facts)
            report.problems += colour_problems
            if unmapped:
                report.unmapped.setdefault(name, Counter()).update(unmapped)
                report.unmapped_files.setdefault(name, set()).add(str(path))
            continue
        squeezed = sum(1 for s in shape if s != 1)  # np.squeeze(raw).ndim
        if spec.volume is None and len(shape) > 2 and squeezed != 2:
            colour = len(shape) == 3 and shape[2] in (3, 4)
            what = "a colour image" if colour else f"an array of shape {shape}"
            also = ", or colour masks read with `label_format: colour`" if colour else ""
            report.problems.append(
                Problem(
                    f"{path} is {what}; labels must be single-channel index maps (save a palette "
                    f"or grayscale PNG){also}",
                    where,
                )
            )
            continue
        if task.threshold is None:
            for value, count in facts.values:
                if value not in task.ignore and task._lookup(value) is None:
                    report.unmapped.setdefault(name, Counter())[value] += count
                    report.unmapped_files.setdefault(name, set()).add(str(path))
    problem = size_mismatch(sample_id, sizes)
    if problem is not None:
        report.problems.append(problem)
    return report


def _unmapped_problem(task: TaskSpec, counter: Counter, files: set) -> Problem:
    """One problem per task for its raw values (or colours) of no class, over all its files."""
    shown = sorted(files)
    where = f"in {len(shown)} files, e.g. {', '.join(shown[:3])}"
    hint = task.unmapped_hint(shown)
    if task.label_format == "colour":
        return unmapped_colours_problem(task, counter, where, hint)
    values = ", ".join(f"{v} ({n} px)" for v, n in sorted(counter.items()))
    return Problem(
        f"raw label values with no class: {values}; {where} "
        f"(classes 0..{task.num_classes - 1}); {hint}",
        f"tasks.{task.name}.values",
    )


def _flat_in_volume(files: list[tuple[Path, tuple]], where: str) -> Problem:
    """One problem per spec field for its 2-D files in a volume spec: usually every file of the
    field is 2-D, and one line per file would bury the fix."""
    path, shape = files[0]
    what = (
        f"{path} is 2-D (shape {shape})"
        if len(files) == 1
        else f"{len(files)} files are 2-D, e.g. {path} (shape {shape}),"
    )
    return Problem(
        f"{what} but the `volume` section slices 3-D files (remove `volume` for 2-D images)", where
    )


def scan(spec: DataSpec, *, threads: int | None = None, cache: bool = True) -> ScanResult:
    """Check every id of every split; returns all problems (errors and warnings).

    Args:
        spec: the data spec.
        threads: files read at once (default: twice the CPUs, at most 8).
        cache: use and update the cache of file facts (:mod:`mmseg_heads.data.scan_cache`);
            ``False`` reads every file and writes no cache.
    """
    ids, problems = _split_ids(spec)
    every_id = sorted({i for split_ids in ids.values() for i in split_ids})
    threads = threads or min(8, (os.cpu_count() or 2) * 2)
    store = open_cache(spec.root) if cache else None
    read = read_all(files_to_read(spec, every_id), store, threads)
    if store is not None:
        store.save()
    reports = [_scan_id(spec, i, read) for i in every_id]
    unmapped: dict[str, Counter] = defaultdict(Counter)
    files: dict[str, set] = defaultdict(set)
    labelled: dict[str, set] = defaultdict(set)
    flat: dict[str, list] = defaultdict(list)
    for sample_id, report in zip(every_id, reports, strict=True):
        problems += report.problems
        for where, flat_files in report.flat.items():  # not `files`: that one maps tasks
            flat[where] += flat_files
        for task, counter in report.unmapped.items():
            unmapped[task].update(counter)
            files[task] |= report.unmapped_files[task]
        for task in report.labelled:
            labelled[task].add(sample_id)
    problems += [_flat_in_volume(files, where) for where, files in flat.items()]
    for task, counter in unmapped.items():
        problems.append(_unmapped_problem(spec.tasks[task], counter, files[task]))
    for split, split_ids in ids.items():
        for task in spec.tasks:
            if split_ids and not labelled[task] & set(split_ids):
                problems.append(
                    Problem(
                        f"no sample of split {split!r} has a label for task {task!r}",
                        f"tasks.{task}.labels",
                    )
                )
    facts = {path: result for path, result in read.items() if isinstance(result, FileFacts)}
    return ScanResult(problems, ids, facts)
