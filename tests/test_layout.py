"""Imports go one way: base -> data, models, losses, metrics -> engine -> report -> cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmseg_heads"
# What each layer may import from the package (besides itself and the base modules).
BASE = {"errors", "registry", "schema", "atomic", "palette"}
ALLOWED = {
    "data": set(),
    "models": set(),
    "losses": set(),
    "metrics": set(),
    "config": {"data", "models", "losses"},
    "engine": {"config", "data", "models", "losses", "metrics"},
    "report": set(),
    "cli": {"config", "data", "models", "losses", "metrics", "engine", "report"},
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mmseg_heads" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_is_below_it(layer):
    files = (
        [PACKAGE / f"{layer}.py"]
        if (PACKAGE / f"{layer}.py").exists()
        else sorted((PACKAGE / layer).rglob("*.py"))
    )
    assert files
    for path in files:
        wrong = imported_layers(path) - BASE - ALLOWED[layer] - {layer}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"
