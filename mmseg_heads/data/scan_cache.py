"""What the data scan learned about each file, kept between runs: an unchanged file is not read again.

The cache is one JSON file per data root, in the user's cache folder (never in the data folder,
which may be read-only or shared, and whose contents are the user's)::

    $MMSEG_HEADS_CACHE_DIR/scan/<root name>-<hash of the root's absolute path>.json
    (default folder: $XDG_CACHE_HOME/mmseg_heads, else ~/.cache/mmseg_heads)

Deleting it is always safe; ``inspect --no-cache`` neither reads nor writes it.

An entry holds **facts about a file's content** (shape, dtype, whether a float array is finite, a
label file's histogram of raw values or of colours), never a verdict: the spec's channels, value maps, thresholds
and ignore lists are applied to the facts on every scan, so an edited spec never reuses a stale
answer, and the key needs no spec settings.

An entry is used only while the file's size, ``mtime_ns`` and ``ctime_ns`` are those it was read
with; a changed file is read again (``ctime`` also changes when a file is replaced by one with the
same size and a preserved ``mtime``, as ``cp -p`` or ``rsync -t`` do). A file changed less than
:data:`RACY_NS` before it was read is not remembered: a second change within one timestamp tick
(a few milliseconds on ext4, 2 s on FAT) could leave size and times as they were, so the cache
could not tell. A cache that cannot be read (corrupt, another format, other reader versions) is
ignored and rebuilt; one that cannot be written is skipped: the cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mmseg_heads import __version__
from mmseg_heads.atomic import write_atomic
from mmseg_heads.errors import UserError

log = logging.getLogger(__name__)

#: Bump when what the readers return or what a :class:`FileFacts` means changes.
FORMAT = "mmseg_heads.scan_cache/1"
#: A file whose last change is this recent when it is read is not cached (see the module doc).
RACY_NS = 2_000_000_000
#: Label histograms with more distinct values are not cached (the file is read on every scan).
MAX_VALUES = 4096

Histogram = tuple[tuple[object, int], ...]  # (raw value, pixels), ascending by value


@dataclass(frozen=True)
class FileFacts:
    """What the scan needs to know about one file's content.

    Attributes:
        shape: the array shape as read.
        dtype: the array's dtype, e.g. ``uint8``.
        finite: for float arrays, whether every value is finite; ``None`` for other dtypes.
        values: raw value histogram (label files); ``None`` when not taken.
        colours: histogram of packed colours (label files of ``label_format: colour``, see
            :func:`~mmseg_heads.data.labels.pack_colours`); ``()`` for a file that is not an RGB
            image, ``None`` when not taken.
    """

    shape: tuple[int, ...]
    dtype: str
    finite: bool | None = None
    values: Histogram | None = None
    colours: Histogram | None = None


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file without reading it."""

    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileStamp:
        return cls(status.st_size, status.st_mtime_ns, status.st_ctime_ns)

    def settled_before(self, time_ns: int) -> bool:
        """Whether the file's last change lies clearly before ``time_ns`` (see :data:`RACY_NS`)."""
        return max(self.mtime_ns, self.ctime_ns) < time_ns - RACY_NS


def cache_folder() -> Path:
    """``$MMSEG_HEADS_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmseg_heads``, else ``~/.cache/…``."""
    own = os.environ.get("MMSEG_HEADS_CACHE_DIR")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mmseg_heads"


def cache_file(root: Path) -> Path:
    """The cache of the data under ``root``: readable name, unique per absolute path."""
    root = Path(os.path.abspath(root))
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)[:40] or "root"
    return cache_folder() / "scan" / f"{name}-{digest}.json"


def open_cache(root: Path) -> ScanCache | None:
    """The cache of the data under ``root``, or ``None`` when there is no place for one (no home
    folder, say): the scan then reads every file, as with ``--no-cache``."""
    try:
        return ScanCache(cache_file(root))
    except (RuntimeError, KeyError, OSError) as exc:  # Path.home() without HOME or a passwd entry
        log.debug("no scan cache for %s: %s", root, exc)
        return None


def _reader_versions() -> dict[str, str | None]:
    """Versions of what decodes the files: an upgrade may read a file differently."""
    versions: dict[str, str | None] = {"mmseg_heads": __version__}
    for package in ("numpy", "pillow", "nibabel"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class ScanCache:
    """The facts of the files under one data root, loaded from and saved to :func:`cache_file`.

    Args:
        path: the cache file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._versions = _reader_versions()
        self._entries: dict[str, dict] = self._load()
        self._changed = False

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.debug("scan cache %s ignored (unreadable: %s); rebuilding it", self.path, exc)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or data.get("readers") != self._versions
            or not isinstance(data.get("files"), dict)
        ):
            log.debug("scan cache %s ignored (another format or reader versions)", self.path)
            return {}
        return data["files"]

    def get(
        self, path: Path, stamp: FileStamp, *, values: bool, colours: bool = False
    ) -> FileFacts | None:
        """The facts of ``path`` if they were taken from this very version of it (and hold the
        histograms ``values`` and ``colours`` ask for); ``None`` means: read the file."""
        entry = self._entries.get(_key(path))
        try:
            if entry is None or FileStamp(**entry["stamp"]) != stamp:
                return None
            facts = _facts_from_json(entry["facts"])
        except (KeyError, TypeError, ValueError) as exc:  # a hand-edited or damaged entry
            log.debug("scan cache entry of %s ignored: %s", path, exc)
            return None
        if (values and facts.values is None) or (colours and facts.colours is None):
            return None
        return facts

    def put(self, path: Path, stamp: FileStamp, facts: FileFacts, read_at_ns: int) -> None:
        """Remember ``facts`` of ``path``, read at ``read_at_ns`` from the version ``stamp``."""
        too_many = any(h is not None and len(h) > MAX_VALUES for h in (facts.values, facts.colours))
        if too_many or not stamp.settled_before(read_at_ns):
            # Not remembered; an older entry of the file must not outlive this fresh read either.
            self._changed |= self._entries.pop(_key(path), None) is not None
            return
        self._entries[_key(path)] = {"stamp": vars(stamp), "facts": _facts_to_json(facts)}
        self._changed = True

    def save(self) -> None:
        """Write the cache atomically; a failure costs only the next scan's time."""
        if not self._changed:
            return
        kept = {p: e for p, e in self._entries.items() if os.path.exists(p)}  # files deleted since
        data = {"format": FORMAT, "readers": self._versions, "files": kept}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data, separators=(",", ":")))
        except (OSError, UserError) as exc:
            log.debug("scan cache %s not written: %s", self.path, exc)


def _key(path: Path) -> str:
    """Entries are keyed by absolute path: the same relative path means another file elsewhere."""
    return os.path.abspath(path)


def _facts_to_json(facts: FileFacts) -> dict:
    return {
        "shape": list(facts.shape),
        "dtype": facts.dtype,
        "finite": facts.finite,
        # NaN and ±inf are written as JSON's NaN/Infinity extension, which json reads back.
        "values": None if facts.values is None else [[v, n] for v, n in facts.values],
        "colours": None if facts.colours is None else [[v, n] for v, n in facts.colours],
    }


def _facts_from_json(raw: dict) -> FileFacts:
    values = raw["values"]
    if values is not None:
        values = tuple((_number(v), int(n)) for v, n in values)
    colours = raw.get("colours")  # absent from entries written before colour labels
    if colours is not None:
        colours = tuple((int(v), int(n)) for v, n in colours)
    finite = raw["finite"]
    if finite not in (None, True, False):
        raise ValueError(f"finite is {finite!r}")
    return FileFacts(
        shape=tuple(int(s) for s in raw["shape"]),
        dtype=str(raw["dtype"]),
        finite=finite,
        values=values,
        colours=colours,
    )


def _number(value: object) -> object:
    if isinstance(value, (int, float)):  # bool is an int: a boolean label file's values
        return value
    raise ValueError(f"raw value {value!r} is not a number")
