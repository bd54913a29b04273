"""Errors that are the user's to fix.

Everything that is wrong with a config, a data spec, a data file or a command-line argument raises
:class:`UserError`. The CLI prints its message (one line naming file, field and fix) and exits with
status 2; anything else is our bug and exits with status 1 and a traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, reported as ``file: field: message``."""

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        return ": ".join([*parts, self.message])


class ConfigError(UserError):
    """One or more problems in a config or data spec, all collected before raising."""

    def __init__(self, problems: list[UserError]):
        self.problems = problems
        first = problems[0]
        super().__init__(first.message, file=first.file, field=first.field)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return UserError.__str__(self.problems[0])
        lines = [f"{len(self.problems)} problems:"]
        lines += [f"  {UserError.__str__(p)}" for p in self.problems]
        return "\n".join(lines)
