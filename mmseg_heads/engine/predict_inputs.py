"""Which files make up each sample to predict: inputs matched to modalities and ids.

An input is found as training finds it: each modality's ``files`` pattern (``"{id}/{id}_T2.nii.gz"``)
is matched against the end of a path (:func:`~mmseg_heads.data.patterns.match_pattern`).
The match gives the sample id and the root the pattern is relative to, and the other modalities'
files follow from their patterns under that root. ``--modality NAME=PATH`` names files directly.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from mmseg_heads.data.patterns import literal_length, match_pattern
from mmseg_heads.data.readers import extension_of
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.errors import UserError

#: Field name used in errors about positional inputs.
INPUT_FIELD = "INPUT"
MODALITY_FIELD = "--modality"


@dataclass(frozen=True)
class PredictInput:
    """One sample to segment.

    Attributes:
        id: sample id; names the output files.
        files: ``{modality: file}``; a modality left out is missing (only with ``allow_missing``).
    """

    id: str
    files: dict[str, Path]


def file_stem(path: Path) -> str:
    """A file name without its extension (``.nii.gz`` counts as one)."""
    name = path.name
    ext = extension_of(path)
    return name[: -len(ext)] if ext and name.lower().endswith(ext) else name


def match_input(path: Path, spec: DataSpec) -> tuple[str, str, Path]:
    """``(modality, id, root)`` of one input file, by the spec's ``files`` patterns.

    Several matching patterns: the most specific (most literal characters) wins. A spec with one
    modality takes any file, its id being the file name without extension.

    Raises:
        UserError: the path matches no pattern, or two equally specific ones.
    """
    matches = []
    for name, modality in spec.modalities.items():
        found = match_pattern(path, modality.files)
        if found is not None:
            matches.append((literal_length(modality.files), name, *found))
    if not matches:
        if len(spec.modalities) == 1:
            return next(iter(spec.modalities)), file_stem(path), path.parent
        patterns = ", ".join(f"{n}: {m.files!r}" for n, m in spec.modalities.items())
        raise UserError(
            f"matches none of the data spec's modality patterns ({patterns}); name each file "
            "with --modality NAME=PATH instead",
            file=path,
            field=INPUT_FIELD,
        )
    matches.sort(key=lambda m: -m[0])
    if len(matches) > 1 and matches[0][0] == matches[1][0]:
        names = " and ".join(repr(m[1]) for m in matches[:2])
        raise UserError(
            f"matches the patterns of {names} alike; use --modality NAME=PATH",
            file=path,
            field=INPUT_FIELD,
        )
    _, name, sample_id, root = matches[0]
    return name, sample_id, root


def companion_files(
    spec: DataSpec, sample_id: str, root: Path, given: dict[str, Path], *, allow_missing: bool
) -> dict[str, Path]:
    """Every modality's file for ``sample_id`` under ``root``; ``given`` files are kept as they are.

    Raises:
        UserError: a modality's file does not exist (unless ``allow_missing``), naming the file
            and the spec field whose pattern gave it.
    """
    files = {}
    for name, modality in spec.modalities.items():
        path = given.get(name, root / modality.files.format(id=sample_id))
        if path.is_file():
            files[name] = path
        elif not allow_missing:
            raise UserError(
                f"modality {name!r} of id {sample_id!r} not found (pattern "
                f"{modality.files!r} of {spec.path}); give it with --modality {name}=PATH, "
                "or pass --allow-missing to segment without it",
                file=path,
                field=f"modalities.{name}.files",
            )
    if not files:
        raise UserError(f"no modality file found for id {sample_id!r}", field=INPUT_FIELD)
    return files


def folder_files(folder: Path, spec: DataSpec) -> list[Path]:
    """The first modality's files in a folder given as an ``INPUT`` (unet-pytorch's
    ``dir_predict``); the other modalities are found by their patterns, as for a single file.

    The folder may be the data root (its files sit in the pattern's folder, ``optical/{id}.png``)
    or the folder of the files themselves.

    Raises:
        UserError: the folder holds no file of that modality.
    """
    name, first = next(iter(spec.modalities.items()))
    pattern = Path(first.files)
    inner = pattern.parent if "{id}" not in str(pattern.parent) else Path()
    where = folder / inner if (folder / inner).is_dir() else folder
    ext = extension_of(pattern) or extension_of(Path(first.files))
    files = sorted(p for p in where.iterdir() if p.is_file() and extension_of(p) == ext)
    if not files:
        raise UserError(
            f"is a folder with no {ext or ''} file of modality {name!r} (looked in {where}); "
            "give the files, or the data folder whose layout the data spec describes",
            file=folder,
            field=INPUT_FIELD,
        )
    return files


def expand_inputs(paths: list[Path], spec: DataSpec) -> list[Path]:
    """``INPUT`` arguments as files: folders become their files (:func:`folder_files`), and a
    pattern with ``*``, ``?`` or ``[`` that is not a file itself is expanded as a glob (for shells
    that do not expand it, or when it was quoted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += folder_files(path, spec)
        elif not path.exists() and any(c in str(path) for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise UserError("matches no file", file=path, field=INPUT_FIELD)
            out += files
        else:
            out.append(path)
    return out


def inputs_from_paths(
    paths: list[Path],
    spec: DataSpec,
    *,
    given: dict[str, Path] | None = None,
    allow_missing: bool = False,
) -> list[PredictInput]:
    """One :class:`PredictInput` per distinct sample among ``paths`` (in their order).

    ``given`` files (from ``--modality``) replace the pattern's file of their modality in every
    sample.

    Raises:
        UserError: a path is missing or matches no pattern, a companion file is missing, or two
            inputs from different folders share an id (their masks would overwrite each other).
    """
    samples: dict[str, PredictInput] = {}
    for path in expand_inputs(paths, spec):
        if not path.is_file():
            raise UserError("input file not found", file=path, field=INPUT_FIELD)
        modality, sample_id, root = match_input(path, spec)
        files = companion_files(
            spec, sample_id, root, {modality: path} | (given or {}), allow_missing=allow_missing
        )
        previous = samples.get(sample_id)
        if previous is not None and previous.files != files:
            raise UserError(
                f"id {sample_id!r} also comes from {next(iter(previous.files.values()))}: their "
                "masks would overwrite each other; predict them into separate --out folders",
                file=path,
                field=INPUT_FIELD,
            )
        samples[sample_id] = PredictInput(sample_id, files)
    return list(samples.values())


def parse_modality_args(pairs: list[str], spec: DataSpec) -> dict[str, Path]:
    """``["optical=a.png", …]`` -> ``{"optical": Path("a.png"), …}``, checked against the spec.

    Raises:
        UserError: a pair without ``=``, an unknown or repeated modality, or a missing file.
    """
    files: dict[str, Path] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise UserError(f"expected NAME=PATH, got {pair!r}", field=MODALITY_FIELD)
        if name not in spec.modalities:
            raise UserError(
                f"{name!r} is not a modality of this model ({', '.join(spec.modalities)})",
                field=MODALITY_FIELD,
            )
        if name in files:
            raise UserError(f"modality {name!r} given twice", field=MODALITY_FIELD)
        path = Path(value)
        if path.is_dir():
            raise UserError(
                f"is a folder; --modality {name}=PATH takes one file of modality {name!r}",
                file=path,
                field=MODALITY_FIELD,
            )
        if not path.is_file():
            raise UserError(f"file of modality {name!r} not found", file=path, field=MODALITY_FIELD)
        files[name] = path
    return files


def explicit_input(
    pairs: list[str], spec: DataSpec, *, allow_missing: bool = False
) -> PredictInput:
    """The one sample ``--modality NAME=PATH …`` describes.

    Its id comes from the first file's match with its modality's pattern, else from its name.

    Raises:
        UserError: as :func:`parse_modality_args`, or a modality left out (unless
            ``allow_missing``).
    """
    files = parse_modality_args(pairs, spec)
    missing = [m for m in spec.modalities if m not in files]
    if missing and not allow_missing:
        raise UserError(
            f"no file for modality {', '.join(map(repr, missing))}: add "
            + " ".join(f"--modality {m}=PATH" for m in missing)
            + " (or --allow-missing to segment without it)",
            field=MODALITY_FIELD,
        )
    name, path = next(iter(files.items()))
    found = match_pattern(path, spec.modalities[name].files)
    sample_id = found[0] if found is not None else file_stem(path)
    return PredictInput(sample_id, {m: files[m] for m in spec.modalities if m in files})


def resolve_inputs(
    spec: DataSpec,
    inputs: list[str | Path],
    modality_files: list[str] | None,
    *,
    allow_missing: bool,
) -> list[PredictInput]:
    """The samples the command line describes (see :func:`~mmseg_heads.engine.predict.predict`).

    Raises:
        UserError: nothing to predict, or a problem with one of the inputs.
    """
    if inputs:
        given = parse_modality_args(modality_files or [], spec)
        return inputs_from_paths(
            [Path(p) for p in inputs], spec, given=given, allow_missing=allow_missing
        )
    if modality_files:
        return [explicit_input(modality_files, spec, allow_missing=allow_missing)]
    raise UserError(
        "nothing to predict: give INPUT files or --modality NAME=PATH", field=INPUT_FIELD
    )
