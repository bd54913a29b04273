"""The checks of one sample's files, written once for the dataset, the scan and ``predict``.

Each check returns a :class:`Problem` (message and spec field), or ``None`` when all is well. The
scan collects the problems of every file and reports them together under the data spec; the
dataset and ``predict`` stop at the first one, raising ``problem.error(file)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmseg_heads.errors import UserError

if TYPE_CHECKING:  # annotations only: the spec's checks import Problem from here
    from mmseg_heads.data.spec import ModalitySpec, TaskSpec


@dataclass
class Problem:
    """One problem with the data: what is wrong and the spec field to fix."""

    message: str
    field: str | None = None
    severity: str = "error"  # or "warning"

    def error(self, file: str | Path) -> UserError:
        """The problem as a :class:`UserError` naming ``file`` (the spec, or the file read)."""
        return UserError(self.message, file=file, field=self.field)


def missing_modality_file(
    path: Path, sample_id: str, modality: str, *, exists: bool
) -> Problem | None:
    """The problem of a modality's file ``path`` of ``sample_id`` that does not exist."""
    if exists:
        return None
    return Problem(f"file not found: {path} (id {sample_id!r})", f"modalities.{modality}.files")


def missing_label_file(
    path: Path, sample_id: str, task: TaskSpec, *, exists: bool, fix: bool = True
) -> Problem | None:
    """The problem of a task's label file ``path`` of ``sample_id`` that does not exist; none for
    an optional task. ``fix``: the message says how to allow it (mark the task optional)."""
    if exists or task.optional:
        return None
    message = f"label file not found: {path} (id {sample_id!r})"
    if fix:
        message += "; mark the task `optional: true` if some samples have no label"
    return Problem(message, f"tasks.{task.name}.labels")


def channel_mismatch(
    path: Path, channels: int, modality: ModalitySpec, *, in_message: bool = False
) -> Problem | None:
    """The problem of a modality's file ``path`` holding ``channels`` channels where the spec
    says otherwise.

    ``in_message``: the message starts with ``path`` (for problems reported under the spec file,
    as the scan does); otherwise the error names ``path`` as its file.
    """
    if channels == modality.channels:
        return None
    if in_message:
        message = f"{path} has {channels} channels but the spec says {modality.channels}"
    else:
        message = f"has {channels} channels but the data spec says {modality.channels}"
    return Problem(message, f"modalities.{modality.name}.channels")


def size_mismatch(
    sample_id: str,
    sizes: list[tuple[str, tuple[int, ...], str]],
    *,
    what: str = "files differ in size",
) -> Problem | None:
    """The problem of the files of one sample that differ in size.

    Args:
        sample_id: the sample's id.
        sizes: ``(name in the message, size, spec field)`` of each file, in the order listed.
        what: the message's words before the listing.

    The problem's field is the one of the first file whose size differs from the most common.
    """
    if len({size for _, size, _ in sizes}) <= 1:
        return None
    listing = ", ".join(f"{name} {'×'.join(map(str, size))}" for name, size, _ in sizes)
    common = Counter(size for _, size, _ in sizes).most_common(1)[0][0]
    odd = next(field for _, size, field in sizes if size != common)
    return Problem(f"id {sample_id!r}: {what}: {listing}", odd)
