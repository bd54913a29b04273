"""Scan every file a data spec references and report *all* problems at once.

``inspect`` and ``train`` (unless ``--skip-scan``) run it before any work: every file exists and
decodes; channels match the spec; all modalities and labels of one id have one size; every raw
label value has a class (unmapped values listed with pixel counts and the files holding them), or
with ``label_format: colour`` every label image is opaque RGB and every colour has a class;
float images hold no NaN/Inf; splits are not empty; ids are not duplicated or shared between
splits (a warning); every task has a labelled sample.

Each file is read once (a label file that several tasks share too), in parallel threads, into a
few facts (:class:`~mmseg_heads.data.scan_cache.FileFacts`: shape, dtype, finiteness, label
value or colour histogram); the checks run on those facts. The facts are cached between runs
(:mod:`mmseg_heads.data.scan_cache`), so a second scan of unchanged files reads none of them.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmseg_heads.data.checks import (
    Problem,
    channel_mismatch,
    missing_label_file,
    missing_modality_file,
    size_mismatch,
)
from mmseg_heads.data.labels import (
    TRANSLUCENT,
    colour_classes,
    colour_listing,
    colours_count,
    dense_minimum,
    is_colour_image,
    pack_colours,
    translucent_problem,
)
from mmseg_heads.data.readers import read_array, read_colour_array
from mmseg_heads.data.scan_cache import FileFacts, FileStamp, Histogram, ScanCache, open_cache
from mmseg_heads.data.spec import DataSpec, TaskSpec
from mmseg_heads.errors import ConfigError, UserError

#: What reading one file gave: its facts, a problem message (it does not decode), or ``None`` (no
#: such file).
Read = FileFacts | str | None


@dataclass(frozen=True)
class _Needs:
    """Which histograms of a file the checks need: raw values (index labels), colours (colour
    labels; a file two tasks share in both formats needs both)."""

    values: bool = False
    colours: bool = False


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


def value_histogram(raw: np.ndarray) -> Histogram:
    """``((raw value, pixels), ...)`` of an array, ascending by value (NaN last, counted once)."""
    low = dense_minimum(raw)
    if low is not None:
        counts = np.bincount(raw.ravel().astype(np.int64) - low)
        present = np.flatnonzero(counts)
        return tuple(zip((present + low).tolist(), counts[present].tolist(), strict=True))
    values, counts = np.unique(raw, return_counts=True)
    return tuple(zip(values.tolist(), counts.tolist(), strict=True))


def colour_histogram(raw: np.ndarray, path: Path) -> Histogram:
    """``((packed colour, pixels), ...)`` of an RGB(A) image, ascending (:data:`TRANSLUCENT`, the
    pixels with alpha < 255, first); ``()`` for an array that is not an RGB image."""
    if not is_colour_image(raw):
        return ()
    return value_histogram(pack_colours(raw, path))


def file_facts(path: Path, *, values: bool, colours: bool = False) -> FileFacts:
    """Decode the whole file and keep what the checks need (``values``: a raw value histogram;
    ``colours``: a histogram of colours, from the file read as colours, see
    :func:`~mmseg_heads.data.readers.read_colour_array`).

    Why not only the header, which would give shape and dtype for a fraction of the time (PIL's
    ``Image.open`` and nibabel's ``load`` read no pixels): a PNG's size and mode sit in its first
    33 bytes and a NIfTI header in its first 348, so a header read passes a file whose pixel data
    is truncated or corrupt, and that file would stop training halfway. Only decoding every pixel
    proves a file decodes; NaN/Inf and label values are in the pixels too. The cache makes it a
    cost paid once per version of a file.

    Raises:
        UserError: the file does not decode (naming it).
    """
    coloured = read_colour_array(path) if colours else None
    # The shape is the index read's where there is one; a file of colour tasks only is read once.
    array = read_array(path) if coloured is None or values else coloured
    floating = np.issubdtype(array.dtype, np.floating)
    return FileFacts(
        shape=tuple(int(s) for s in array.shape),
        dtype=str(array.dtype),
        finite=bool(np.isfinite(array).all()) if floating else None,
        values=value_histogram(array) if values else None,
        colours=colour_histogram(coloured, path) if coloured is not None else None,
    )


def _files_to_read(spec: DataSpec, ids: list[str]) -> dict[Path, _Needs]:
    """``{file: the histograms it needs}``: every modality and label file of ``ids``, each once
    (tasks often share one label file)."""
    files: dict[Path, _Needs] = {}
    for sample_id in ids:
        for name in spec.modalities:
            files.setdefault(spec.modality_file(name, sample_id), _Needs())
        for name, task in spec.tasks.items():
            path = spec.label_file(name, sample_id)
            before = files.get(path, _Needs())
            if task.label_format == "colour":
                files[path] = _Needs(before.values, colours=True)
            else:
                files[path] = _Needs(True, before.colours)
    return files


def _read_one(path: Path, needs: _Needs, store: ScanCache | None) -> tuple[Read, tuple | None]:
    """``(what reading gave, (stamp, read time) to cache it under, or None)``."""
    try:
        status = path.stat()
    except OSError:
        return None, None
    if not stat.S_ISREG(status.st_mode):  # a folder or a device where a file is wanted
        return None, None
    stamp = FileStamp.of(status)
    wanted = {"values": needs.values, "colours": needs.colours}
    cached = store.get(path, stamp, **wanted) if store is not None else None
    if cached is not None:
        return cached, None
    started = time.time_ns()
    try:
        facts = file_facts(path, **wanted)
    except UserError as exc:
        return f"{path}: {exc.message}", None  # not cached: a broken file is read again next time
    try:
        unchanged = FileStamp.of(path.stat()) == stamp
    except OSError:
        unchanged = False
    # A file that changed while it was read is not cached: the facts may mix two versions.
    return facts, ((stamp, started) if unchanged else None)


def _read_all(files: dict[Path, _Needs], store: ScanCache | None, threads: int) -> dict[Path, Read]:
    # A bar on a terminal only (tqdm's disable=None): a scan of thousands of files takes a while.
    with (
        ThreadPoolExecutor(threads) as pool,
        tqdm(total=len(files), desc="scan", unit="file", disable=None, leave=False) as bar,
    ):

        def read(item):
            try:
                return _read_one(*item, store)
            finally:
                bar.update()

        results = list(pool.map(read, files.items()))
    read: dict[Path, Read] = {}
    for path, (result, stamp) in zip(files, results, strict=True):
        read[path] = result
        if store is not None and stamp is not None:
            store.put(path, stamp[0], result, stamp[1])
    return read


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
            _check_colours(task, path, facts, report)
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


def _check_colours(task: TaskSpec, path: Path, facts: FileFacts, report: _IdReport) -> None:
    """The checks of one colour label file: an RGB image, opaque, its colours those of classes
    (colours of no class are counted in ``report.unmapped``, to be listed once per task)."""
    name = task.name
    if not facts.colours:
        what = "a greyscale image" if len(facts.shape) == 2 else f"an array of shape {facts.shape}"
        report.problems.append(
            Problem(
                f"{path} is {what}, not RGB; `label_format: colour` reads RGB (or opaque RGBA) "
                "colour masks: save the labels as RGB, or set `label_format: index` for index maps",
                f"tasks.{name}.label_format",
            )
        )
        return
    classes = colour_classes(task)
    for colour, count in facts.colours:
        if colour == TRANSLUCENT:
            report.problems.append(
                Problem(f"{path}: {translucent_problem(count)}", f"tasks.{name}.labels")
            )
        elif colour not in classes:
            report.unmapped.setdefault(name, Counter())[colour] += count
            report.unmapped_files.setdefault(name, set()).add(str(path))


def _unmapped_problem(task: TaskSpec, counter: Counter, files: set) -> Problem:
    """One problem per task for its raw values (or colours) of no class, over all its files."""
    shown = sorted(files)
    where = f"in {len(shown)} files, e.g. {', '.join(shown[:3])}"
    hint = task.unmapped_hint(shown)
    if task.label_format == "colour":
        listing = colour_listing(list(counter), counter)
        return Problem(
            f"{colours_count(len(counter))} not in tasks.{task.name}.colors: {listing}; {where}; "
            f"{hint}",
            f"tasks.{task.name}.colors",
        )
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
    read = _read_all(_files_to_read(spec, every_id), store, threads)
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
