"""A small declarative schema for YAML files: one place that knows every key.

Configs and data specs are validated against a tree of :class:`Struct`, :class:`MapOf`,
:class:`ListOf`, :class:`OneOf` and scalar :class:`Field` s. Validation collects *every* problem
(unknown keys with a "did you mean", wrong types, values out of range) with the dotted path of the
field, then raises one :class:`~mmseg_heads.errors.ConfigError`. The same tree generates the
reference docs, so docs and code cannot drift.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmseg_heads.errors import ConfigError, UserError

REQUIRED = object()
#: Default of a Struct whose keys all have defaults: an omitted section gets every default.
FILL = object()


def closest(word: str, options: list[str]) -> str | None:
    """The option most like ``word`` (a likely typo of it), or None: for "did you mean" hints."""
    matches = difflib.get_close_matches(word, options, n=1)
    return matches[0] if matches else None


def ascending(values: list) -> str | None:
    """``ListOf.check`` for a ``[low, high]`` pair: low must not exceed high."""
    return None if values[0] <= values[1] else "low must not exceed high"


class Node:
    """Base of every schema node: ``validate`` returns the value with defaults filled in."""

    doc: str = ""

    def validate(self, value: Any, path: str, problems: list[UserError]) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


@dataclass
class Field(Node):
    """A scalar: ``kind`` is ``str``, ``int``, ``float``, ``bool`` or a tuple of them."""

    kind: type | tuple[type, ...]
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], str | None] | None = None

    def _kinds(self) -> tuple[type, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    def _type_ok(self, value: Any) -> bool:
        for kind in self._kinds():
            if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
            if kind is int and isinstance(value, int) and not isinstance(value, bool):
                return True
            if kind not in (int, float) and isinstance(value, kind):
                return True
        return False

    def validate(self, value, path, problems):
        if not self._type_ok(value):
            problems.append(
                UserError(
                    f"expected {self.describe()}, got {_type_name(value)} {value!r}", field=path
                )
            )
            return value
        if self.choices is not None and value not in self.choices:
            hint = closest(str(value), [str(c) for c in self.choices])
            did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
            problems.append(
                UserError(
                    f"{value!r} is not one of {', '.join(map(str, self.choices))}{did_you_mean}",
                    field=path,
                )
            )
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                problems.append(
                    UserError(f"{value!r} is below the minimum {self.minimum}", field=path)
                )
            if self.maximum is not None and value > self.maximum:
                problems.append(
                    UserError(f"{value!r} is above the maximum {self.maximum}", field=path)
                )
        if self.check is not None:
            message = self.check(value)
            if message:
                problems.append(UserError(message, field=path))
        return value

    def describe(self) -> str:
        if self.choices is not None:
            return " | ".join(map(str, self.choices))
        return " or ".join(k.__name__ for k in self._kinds())


@dataclass
class Struct(Node):
    """A mapping with a fixed set of keys."""

    fields: dict[str, Node]
    doc: str = ""
    default: Any = REQUIRED
    #: Schema of keys not in ``fields`` (e.g. task names beside fixed keys); None: they are errors.
    extra: Node | None = None

    def validate(self, value, path, problems):
        if not isinstance(value, dict):
            problems.append(
                UserError(f"expected a mapping, got {_type_name(value)}", field=path or None)
            )
            return value
        out: dict[str, Any] = {}
        for key in value:
            if key not in self.fields and self.extra is not None:
                out[str(key)] = self.extra.validate(value[key], _join(path, str(key)), problems)
            elif key not in self.fields:
                hint = closest(str(key), list(self.fields))
                did_you_mean = f"did you mean {hint!r}? " if hint else ""
                problems.append(
                    UserError(
                        f"unknown key; {did_you_mean}valid keys: {', '.join(self.fields)}",
                        field=_join(path, str(key)),
                    )
                )
        for key, node in self.fields.items():
            if key in value and value[key] is not None:
                out[key] = node.validate(value[key], _join(path, key), problems)
            else:
                default = getattr(node, "default", REQUIRED)
                if default is FILL:
                    out[key] = node.validate({}, _join(path, key), problems)
                elif default is REQUIRED:
                    if key not in value:
                        problems.append(UserError("missing required key", field=_join(path, key)))
                    else:
                        problems.append(UserError("must not be empty", field=_join(path, key)))
                else:
                    out[key] = default() if callable(default) else default
        return out

    def describe(self) -> str:
        return "mapping"


@dataclass
class MapOf(Node):
    """A mapping from user-chosen names (modalities, tasks, splits) to values of one schema."""

    value: Node
    doc: str = ""
    default: Any = REQUIRED
    min_items: int = 0

    def validate(self, value, path, problems):
        if not isinstance(value, dict):
            problems.append(UserError(f"expected a mapping, got {_type_name(value)}", field=path))
            return value
        if len(value) < self.min_items:
            problems.append(UserError(f"needs at least {self.min_items} entries", field=path))
        return {
            str(k): self.value.validate(v, _join(path, str(k)), problems) for k, v in value.items()
        }

    def describe(self) -> str:
        return f"mapping name -> {self.value.describe()}"


@dataclass
class ListOf(Node):
    item: Node
    doc: str = ""
    default: Any = REQUIRED
    min_items: int = 0
    max_items: int | None = None
    #: Checks the whole list once its items are valid; returns a message or None.
    check: Callable[[list], str | None] | None = None

    def validate(self, value, path, problems):
        if not isinstance(value, list):
            problems.append(
                UserError(f"expected a list, got {_type_name(value)} {value!r}", field=path)
            )
            return value
        if len(value) < self.min_items:
            problems.append(UserError(f"needs at least {self.min_items} items", field=path))
        if self.max_items is not None and len(value) > self.max_items:
            problems.append(UserError(f"takes at most {self.max_items} items", field=path))
        before = len(problems)
        out = [self.item.validate(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        if self.check is not None and len(problems) == before:
            message = self.check(out)
            if message:
                problems.append(UserError(message, field=path))
        return out

    def describe(self) -> str:
        if self.min_items and self.min_items == self.max_items:
            return f"list of {self.min_items} {self.item.describe()}"
        return f"list of {self.item.describe()}"


@dataclass
class OneOf(Node):
    """The first alternative whose *type* matches decides: e.g. ``ce: 1.0`` or ``ce: {weight: 1.0}``."""

    options: list[Node]
    doc: str = ""
    default: Any = REQUIRED

    def validate(self, value, path, problems):
        for option in self.options:
            if _shape_matches(option, value):
                return option.validate(value, path, problems)
        problems.append(
            UserError(f"expected {self.describe()}, got {_type_name(value)} {value!r}", field=path)
        )
        return value

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)


def _shape_matches(node: Node, value: Any) -> bool:
    if isinstance(node, (Struct, MapOf)):
        return isinstance(value, dict)
    if isinstance(node, ListOf):
        return isinstance(value, list)
    if isinstance(node, Field):
        return node._type_ok(value)
    if isinstance(node, OneOf):
        return any(_shape_matches(o, value) for o in node.options)
    return False


@dataclass
class Any_(Node):
    """Anything (validated elsewhere, e.g. label value maps whose keys are raw pixel values)."""

    doc: str = ""
    default: Any = REQUIRED
    shape: str = "any"

    def validate(self, value, path, problems):
        return value

    def describe(self) -> str:
        return self.shape


def validate(schema: Node, value: Any, *, file: str) -> Any:
    """Validate ``value`` against ``schema``; raise one ConfigError listing every problem."""
    problems: list[UserError] = []
    result = schema.validate(value if value is not None else {}, "", problems)
    if problems:
        for problem in problems:
            problem.file = file
        raise ConfigError(problems)
    return result


@dataclass
class DocRow:
    key: str
    type: str
    default: str
    doc: str


def doc_rows(schema: Node, path: str = "") -> list[DocRow]:
    """Flatten a schema into reference-table rows (``key``, ``type``, ``default``, ``doc``)."""
    rows: list[DocRow] = []
    if isinstance(schema, Struct):
        for key, node in schema.fields.items():
            sub = _join(path, key)
            default = getattr(node, "default", REQUIRED)
            if default is REQUIRED:
                shown = "required"
            elif default is FILL:
                shown = "(section)"
            else:
                shown = repr(default() if callable(default) else default)
            rows.append(DocRow(sub, node.describe(), shown, node.doc))
            rows += doc_rows(node, sub)
    elif isinstance(schema, MapOf):
        rows += doc_rows(schema.value, _join(path, "<name>"))
    if isinstance(schema, Struct) and schema.extra is not None:
        rows.append(DocRow(_join(path, "<name>"), schema.extra.describe(), "", schema.extra.doc))
        rows += doc_rows(schema.extra, _join(path, "<name>"))
    elif isinstance(schema, OneOf):
        for option in schema.options:
            rows += doc_rows(option, path)
    return rows
