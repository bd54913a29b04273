"""docs/architecture.md matches the code: its module map names every module of mmseg_heads/ (and
none that is gone), and the files its "Where to add X" table and its file references name exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mmseg_heads"
DOC = REPO / "docs" / "architecture.md"
#: Modules the map may name but need not (package markers and the ``-m`` entry point).
OPTIONAL = {"__init__.py", "__main__.py"}


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole line), up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (
            i
            for i in range(start, len(lines))
            if re.match(rf"#{{1,{level}}} ", lines[i]) and not _in_code(lines, start, i)
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _in_code(lines: list[str], start: int, index: int) -> bool:
    """Whether ``lines[index]`` is inside a fenced block that opened after ``start``."""
    return sum(line.startswith("```") for line in lines[start:index]) % 2 == 1


def module_map(text: str) -> list[str]:
    """The modules the map names, in order: the first token of each line of the first code block
    under "## Modules" that ends in ``.py`` (a path relative to ``mmseg_heads/``)."""
    block = re.search(r"^```\n(.*?)^```", section(text, "## Modules"), re.S | re.M)
    assert block, 'docs/architecture.md: no code block under "## Modules"'
    named = []
    for line in block.group(1).splitlines():
        tokens = line.split()
        if tokens and tokens[0].endswith(".py"):
            assert len(tokens) > 1, f"module map: {tokens[0]} has no description"
            named.append(tokens[0])
    return named


def package_modules() -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in OPTIONAL
    }


def map_problems(named: list[str], modules: set[str]) -> list[str]:
    problems = [f"{m}: not in the module map" for m in sorted(modules - set(named))]
    problems += [
        f"{m}: in the module map, but mmseg_heads/{m} does not exist"
        for m in named
        if not (PACKAGE / m).is_file()
    ]
    problems += [f"{m}: named twice" for m in sorted({m for m in named if named.count(m) > 1})]
    return problems


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text()


def test_module_map_names_every_module_and_only_real_ones(text):
    problems = map_problems(module_map(text), package_modules())
    assert not problems, "docs/architecture.md, ## Modules:\n" + "\n".join(problems)


def test_the_map_check_catches_a_dropped_line_and_a_stale_one(text):
    """Deleting any one line of the map from the page fails the check above, naming that module;
    so does a line naming a module that is gone."""
    modules = package_modules()
    before = set(map_problems(module_map(text), modules))
    lines = text.splitlines(keepends=True)
    dropped = 0
    for index, line in enumerate(lines):
        tokens = line.split()
        if not tokens or not tokens[0].endswith(".py") or tokens[0] not in modules:
            continue
        edited = "".join(lines[:index] + lines[index + 1 :])
        after = set(map_problems(module_map(edited), modules))
        assert after - before == {f"{tokens[0]}: not in the module map"}, line
        dropped += 1
    assert dropped == len(set(module_map(text)) & modules) > 50
    stale = text.replace(
        "  engine/run.py ",
        "  engine/gone.py            a module since removed\n  engine/run.py ",
        1,
    )
    assert set(map_problems(module_map(stale), modules)) - before == {
        "engine/gone.py: in the module map, but mmseg_heads/engine/gone.py does not exist"
    }


def where_to_add_rows(text: str) -> list[list[str]]:
    """The cells of each body row of the table under "### Where to add X"."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section(text, "### Where to add X").splitlines()
        if line.startswith("|")
    ]
    assert rows[0][:3] == ["to add", "file", "covered by"], rows[0]
    return rows[2:]  # header and separator off


def paths_in(cell: str) -> list[str]:
    """Backticked spans that are paths: no spaces, and a ``/`` or a file extension."""
    return [
        span
        for span in re.findall(r"`([^`\s]+)`", cell)
        if "/" in span or re.search(r"\.(py|md|ya?ml)$", span)
    ]


def test_where_to_add_names_existing_files_and_tests(text):
    rows = where_to_add_rows(text)
    wanted = {
        "an encoder",
        "a fusion",
        "a head kind",
        "a gate",
        "a loss term",
        "an augmentation transform",
        "an augmentation preset",
        "a file reader",
        "a report section",
        "a CLI command",
    }
    assert wanted <= {row[0] for row in rows}, sorted(wanted - {row[0] for row in rows})
    for what, where, tests, *rest in rows:
        files = paths_in(where)
        assert files and all(f.startswith("mmseg_heads/") for f in files), (what, where)
        test_files = paths_in(tests)
        assert test_files and all(re.fullmatch(r"tests/test_\w+\.py", f) for f in test_files), (
            what,
            tests,
        )
        for path in files + test_files + paths_in(" ".join(rest)):
            assert (REPO / path).exists(), f"Where to add {what}: {path} does not exist"


def expand(path: str) -> list[str]:
    """``report/{tables,html}.py`` -> both paths."""
    match = re.search(r"\{([^}]*)\}", path)
    if not match:
        return [path]
    head, tail = path[: match.start()], path[match.end() :]
    return [p for option in match.group(1).split(",") for p in expand(head + option + tail)]


def test_every_python_file_the_page_names_exists(text):
    """Backticked ``x/y.py`` (or ``x/y.py::name``) anywhere on the page: a file of the repository,
    or of the package (``engine/run.py``); ``cli/*.py`` must match at least one."""
    missing = []
    for span in sorted(set(re.findall(r"`([\w./{},*-]+\.py)(?:::\w+)?`", text))):
        for path in expand(span):
            if not any(list(root.glob(path)) for root in (REPO, PACKAGE)):
                missing.append(path)
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
