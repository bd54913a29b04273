"""Splits: the ids of each named subset of a data spec (``train``, ``val``, …).

A split takes an id list file, a regular expression searched in each id, or a fraction of the ids
(fraction splits share one seeded shuffle, so they never overlap). With a ``volume`` section a
split holds case ids; the dataset expands them to slice ids ``"{case}#{slice}"``.
:meth:`~mmseg_heads.data.spec.DataSpec.split_ids` calls :func:`split_ids`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mmseg_heads.errors import UserError

if TYPE_CHECKING:
    from mmseg_heads.data.spec import DataSpec

#: Between a case id and a slice index in the ids of sliced volumes: ``Case3001#2``.
SLICE_SEPARATOR = "#"


def split_ids(spec: DataSpec, split: str) -> list[str]:
    """The file ids of a split: with a ``volume`` section, case ids, so that the slices of one
    case always fall in the same split (the dataset expands them to slice ids)."""
    if split not in spec.splits:
        raise UserError(
            f"no split {split!r}; the spec has: {', '.join(spec.splits)} (name one in the "
            "config's `eval.split` or with --split, or add the split here)",
            file=spec.path,
            field="splits",
        )
    all_ids = spec.all_ids()
    if not all_ids:
        first = next(iter(spec.modalities))
        raise UserError(
            f"no files match {spec.modalities[first].files!r} under {spec.root}",
            file=spec.path,
            field=f"modalities.{first}.files",
        )
    rule = spec.splits[split]
    where = f"splits.{split}"
    if rule["ids"] is not None:
        ids = read_id_list(id_list_path(spec, rule["ids"]), spec.path, f"{where}.ids")
        unknown = sorted(set(ids) - set(all_ids))
        # A few ids without files are reported file by file (which file is missing) by the
        # dataset and the scan; a list where nothing matches is the wrong list.
        slice_ids = spec.volume is not None and any(SLICE_SEPARATOR in i for i in unknown)
        if unknown and (slice_ids or len(unknown) == len(set(ids))):
            hint = (
                f" (list case ids, not slice ids with {SLICE_SEPARATOR!r}: a split takes whole cases)"
                if spec.volume is not None and any(SLICE_SEPARATOR in i for i in unknown)
                else ""
            )
            raise UserError(
                f"{len(unknown)} ids have no files, e.g. {unknown[:3]}{hint}",
                file=spec.path,
                field=f"{where}.ids",
            )
    elif rule["pattern"] is not None:
        regex = re.compile(rule["pattern"])
        ids = [i for i in all_ids if regex.search(i)]
    else:
        ids = fraction_split(spec, split, all_ids)
    if not ids:
        raise UserError("the split is empty", file=spec.path, field=where)
    return ids


def id_list_path(spec: DataSpec, name: str) -> Path:
    """An id list is looked up next to the spec file first, then under ``root``."""
    beside_spec = spec.path.parent / name
    return (
        beside_spec
        if beside_spec.is_file() or not (spec.root / name).is_file()
        else spec.root / name
    )


def read_id_list(path: Path, spec: Path, field_name: str) -> list[str]:
    """The ids of an id list file, one a line (blank lines skipped)."""
    if not path.is_file():
        raise UserError(f"id list {path} not found", file=spec, field=field_name)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def fraction_split(spec: DataSpec, split: str, all_ids: list[str]) -> list[str]:
    """Fraction splits share one seeded shuffle of the ids not claimed by other splits and
    take consecutive shares of it in the order they are declared, so they never overlap."""
    claimed: set[str] = set()
    fraction_splits = []
    for name, rule in spec.splits.items():
        if rule["fraction"] is not None:
            fraction_splits.append(name)
        elif name != split:
            claimed.update(spec.split_ids(name))
    pool = sorted(set(all_ids) - claimed)
    random.Random(spec.splits[fraction_splits[0]]["seed"]).shuffle(pool)
    start = 0.0
    for name in fraction_splits:
        stop = start + spec.splits[name]["fraction"]
        if name == split:
            return pool[round(start * len(pool)) : round(stop * len(pool))]
        start = stop
    raise AssertionError("unreachable")
