"""docs/config.md and docs/data_spec.md are what docs/generate_reference.py renders from the schemas."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmseg_heads.config import CONFIG_SCHEMA
from mmseg_heads.data.spec import DATA_SPEC_SCHEMA
from mmseg_heads.schema import doc_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = {"config.md": CONFIG_SCHEMA, "data_spec.md": DATA_SPEC_SCHEMA}


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location(
        "generate_reference", DOCS / "generate_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_is_up_to_date(generator, name):
    rendered = generator.render_pages()[name]
    on_disk = (DOCS / name).read_text()
    assert on_disk == rendered, f"docs/{name} is out of date: run python docs/generate_reference.py"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_key_is_documented(generator, name):
    page = generator.render_pages()[name]
    rows = doc_rows(PAGES[name])
    assert rows
    for row in rows:
        assert f"| `{row.key}` |" in page, f"{row.key} missing from docs/{name}"
        assert generator.meaning(row), f"{row.key} has no meaning in docs/{name}: add a NOTES entry"


def test_notes_name_real_keys(generator):
    keys = {row.key for schema in PAGES.values() for row in doc_rows(schema)}
    stale = sorted(set(generator.NOTES) - keys)
    assert not stale, f"NOTES for keys no schema has: {stale}"


def test_check_flags_a_stale_page(generator, tmp_path):
    assert generator.main(["--docs", str(tmp_path), "--check"]) == 1  # missing pages
    assert generator.main(["--docs", str(tmp_path)]) == 0
    assert generator.main(["--docs", str(tmp_path), "--check"]) == 0
    page = tmp_path / "data_spec.md"
    page.write_text(
        page.read_text().replace("| `splits.<name>.pattern` |", "| `splits.<name>.regex` |")
    )
    assert generator.stale_pages(tmp_path) == ["data_spec.md"]
    assert generator.main(["--docs", str(tmp_path), "--check"]) == 1
