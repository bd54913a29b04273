"""Errors that are the user's to fix.

Everything that is wrong with a config, a data spec, a data file or a command-line argument raises
:class:`UserError`. The CLI prints its message (one line naming file, field and fix) and exits with
status 2; anything else is our bug and exits with status 1 and a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

#: How torch's DataLoader re-raises an exception from a worker: ``type(text)``, where the text
#: holds the worker's whole traceback (see ``torch._utils.ExceptionWrapper.reraise``).
_WORKER_RERAISE = re.compile(r"Caught \w+ in .*?\.\nOriginal Traceback")
_OWN_ERROR_LINE = re.compile(rf"^{re.escape(__name__)}\.\w+: ", re.MULTILINE)


def _unwrap_worker_message(message: str) -> str:
    """Our own message out of a DataLoader worker's re-raised traceback text, so that a user error
    in a worker prints one line, as it does in the main process."""
    if not isinstance(message, str) or not _WORKER_RERAISE.match(message):
        return message
    found = list(_OWN_ERROR_LINE.finditer(message))
    return message[found[-1].end() :].rstrip("\n") if found else message


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_failure(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, on one line: torch's own message
    spans lines, in colour, and advises unpickling untrusted code."""
    text = " ".join(_ANSI.sub("", str(exc)).split())
    if "Weights only load failed" in text:
        return (
            "it pickles Python objects, not only tensors, e.g. a whole model saved with torch.save"
        )
    return f"torch.load: {type(exc).__name__}: {text[:200]}"


class UserError(Exception):
    """A problem with the user's input, reported as ``file: field: message``."""

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.message = _unwrap_worker_message(message)
        self.file = str(file) if file is not None else None
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        return ": ".join([*parts, self.message])


class WriteError(UserError, OSError):
    """An output file could not be written (a full disk, a quota, no permission): the user's to
    fix, so it prints one line and exits with status 2. Still an :class:`OSError`, with the
    original ``errno``, for code that handles failed writes as such."""

    def __init__(self, message: str, *, file: str | Path, errno: int | None = None):
        super().__init__(message, file=file)
        self.errno = errno


class ConfigError(UserError):
    """One or more problems in a config or data spec, all collected before raising."""

    def __init__(self, problems: list[UserError]):
        if isinstance(problems, str):  # re-raised from a DataLoader worker: the text only
            problems = [UserError(problems)]
        self.problems = problems
        first = problems[0]
        super().__init__(first.message, file=first.file, field=first.field)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return UserError.__str__(self.problems[0])
        lines = [f"{len(self.problems)} problems:"]
        lines += [f"  {UserError.__str__(p)}" for p in self.problems]
        return "\n".join(lines)
