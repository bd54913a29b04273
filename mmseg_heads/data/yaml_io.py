"""YAML files (configs and data specs) read as mappings, a key written twice being an error.

:func:`load_yaml` reads a file; :func:`parse_yaml` parses text (an override's value, too) with
:class:`_NoDuplicatesLoader`, which records every key repeated within one mapping (where YAML
readers silently keep the last); :func:`yaml_problem` turns a syntax error into a line and a
reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mmseg_heads.errors import ConfigError, UserError


def yaml_problem(exc: yaml.YAMLError) -> tuple[str | None, str]:
    """``("line L, column C", one-line reason)`` of a YAML syntax error (1-based, as editors)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if mark is None or problem is None:
        return None, " ".join(str(exc).split())
    reason = f"{problem} ({context})" if context else problem
    return f"line {mark.line + 1}, column {mark.column + 1}", reason


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _NoDuplicatesLoader(yaml.SafeLoader):
    """PyYAML's safe loader, recording each key repeated within one mapping (where YAML readers
    silently keep the last) instead of dropping the earlier one without a word.

    Keys brought in by a merge (``<<: *base``) and then set again are YAML's way of overriding,
    not duplicates. The keys checked are those each mapping had as written: PyYAML flattens
    merges into the merged mapping's node in place, sometimes before that mapping's own turn.
    """

    def __init__(self, stream):
        super().__init__(stream)
        #: ``(dotted field of the mapping, first key node, repeated key node)``.
        self.duplicates: list[tuple[str, yaml.Node, yaml.Node]] = []
        #: ``id(mapping node) -> (its dotted field, its key nodes as written)``.
        self._written: dict[int, tuple[str, list[yaml.Node]]] = {}

    def construct_document(self, node):
        self._written = {
            id(mapping): (where, [k for k, _ in mapping.value if k.tag != _MERGE_TAG])
            for mapping, where in _mappings(node)
        }
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        where, keys = self._written.pop(id(node), ("", []))
        seen: dict = {}
        for key_node in keys:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                self.duplicates.append((where, first, key_node))
        return super().construct_mapping(node, deep=deep)


def _key_text(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else "?"


def _mappings(root: yaml.Node) -> list[tuple[yaml.MappingNode, str]]:
    """Every mapping node of a composed YAML document with its dotted field (``train``,
    ``train.augment[0].flip``; ``""`` for the top level), in document order."""
    found: list[tuple[yaml.MappingNode, str]] = []
    visited: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, where = todo.pop()
        if id(node) in visited:  # an alias: the first place it appears names it
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            found.append((node, where))
            children = [
                (value, f"{where}.{_key_text(key)}" if where else _key_text(key))
                for key, value in node.value
            ]
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        else:
            continue
        todo += reversed(children)  # popped in document order
    return found


# YAML 1.1 (PyYAML) reads ``1e-3`` as a string: its floats need a dot (``1.0e-3``). Everyone
# writes learning rates as ``3e-4``, so numbers in exponent form are floats here (as in YAML 1.2).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_NoDuplicatesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789")
)


def parse_yaml(text: str, file: str | Path, *, field: str = ""):
    """``yaml.safe_load(text)``, except that a key repeated within one mapping is an error: one
    :class:`UserError` per repetition, naming ``file``, the dotted field (below ``field``, e.g. an
    override's key) and where both are written.

    Raises:
        ConfigError: the duplicates; ``yaml.YAMLError`` for a syntax error, as ``safe_load``.
    """
    loader = _NoDuplicatesLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if not loader.duplicates:
        return data
    one_line = "\n" not in text.strip()
    problems = []
    for where, first, again in sorted(
        loader.duplicates, key=lambda d: (d[2].start_mark.line, d[2].start_mark.column)
    ):
        a, b = first.start_mark, again.start_mark
        if one_line:
            at = f"first at column {a.column + 1}, again at column {b.column + 1}"
        elif a.line == b.line:
            at = (
                f"first at line {a.line + 1}, column {a.column + 1}, again at column {b.column + 1}"
            )
        else:
            at = f"first at line {a.line + 1}, again at line {b.line + 1}"
        dotted = ".".join(part for part in (field, where, _key_text(first)) if part)
        problems.append(
            UserError(
                f"duplicate key: {at}; keep one of them (a YAML reader would silently take the "
                "last)",
                file=file,
                field=dotted,
            )
        )
    raise ConfigError(problems)


def load_yaml(path: Path) -> dict:
    """A YAML file (a config or a data spec) as a mapping; a key given twice in one mapping is an
    error (see :class:`_NoDuplicatesLoader`)."""
    if path.is_dir():
        raise UserError("is a folder; give a YAML file (a config or a data spec)", file=path)
    if not path.is_file():
        raise UserError("file not found", file=path)
    try:
        data = parse_yaml(path.read_text(), path)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"not a text file ({exc.reason} at byte {exc.start}); give a YAML config or data spec",
            file=path,
        ) from exc
    except yaml.YAMLError as exc:
        where, message = yaml_problem(exc)
        raise UserError(f"not valid YAML: {message}", file=path, field=where) from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise UserError(
            f"expected a YAML mapping at the top level (`key: value` lines), got {got}", file=path
        )
    return data
