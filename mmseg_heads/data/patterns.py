"""File patterns with ``{id}``: ``"images/{id}.png"``, ``"{id}/{id}_T2.nii.gz"``.

One pattern -> regular expression (:func:`pattern_regex`) serves both directions: finding the ids
of the files under a root (:func:`ids_from_pattern`, the spec's id discovery) and finding the id
and the root of a given file (:func:`match_pattern`, the inputs of ``predict``).
"""

from __future__ import annotations

import glob
import re
from pathlib import Path


def pattern_regex(pattern: str) -> re.Pattern:
    """A spec pattern as a regex matched at the end of a POSIX path.

    ``{id}`` becomes the named group ``id`` (no ``/`` inside; a second ``{id}`` must repeat it);
    group ``rel`` is the part of the path the pattern covers, so the root is what precedes it.
    ``match`` on a path relative to the root matches the whole of it.
    """
    head, _, tail = pattern.partition("{id}")
    tail_regex = re.escape(tail).replace(re.escape("{id}"), r"(?P=id)")
    return re.compile(rf"(?:^|/)(?P<rel>{re.escape(head)}(?P<id>[^/]+?){tail_regex})$")


def literal_length(pattern: str) -> int:
    """Characters of a pattern besides ``{id}``: the more, the more specific the pattern."""
    return len(pattern.replace("{id}", ""))


def match_pattern(path: Path, pattern: str) -> tuple[str, Path] | None:
    """``(id, root)`` when ``path`` ends with ``pattern``, else ``None``."""
    text = path.as_posix()
    match = pattern_regex(pattern).search(text)
    if match is None:
        return None
    root = text[: match.start("rel")] or "."
    return match.group("id"), Path(root)


def ids_from_pattern(root: Path, pattern: str) -> list[str]:
    """The sorted ids of the files under ``root`` that ``pattern`` (relative to it) names."""
    # Braces are not glob syntax, so escaping keeps "{id}" intact for the replacement.
    glob_pattern = glob.escape(str(root / pattern)).replace("{id}", "*")
    regex = pattern_regex(pattern)
    ids = set()
    for path in glob.glob(glob_pattern):
        rel = Path(path).relative_to(root).as_posix()
        match = regex.match(rel)
        if match:
            ids.add(match.group("id"))
    return sorted(ids)
