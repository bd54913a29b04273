"""Imports go one way: base -> data, models, losses, metrics -> engine -> report -> cli; inside
engine/, inference (run loading, evaluation, prediction, export) never imports training."""

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


# --- inside engine/: inference never depends on training --------------------------------------
ENGINE = PACKAGE / "engine"
#: The engine modules that train: the trainer and what only it needs.
TRAINING = {
    "trainer",
    "steps",
    "step_log",
    "compile_mode",
    "optim",
    "schedule",
    "resume",
    "run_dir",
    "batch_size",
    "tensorboard",
    "timeline",
    "validation",
    "progress",
}
#: The engine modules that use a trained run (and their helpers): none may reach TRAINING.
INFERENCE = {
    "run", "checkpoint", "evaluate", "evaluator", "inference", "loaders", "precision",
    "distributed", "threads",
    "predict", "predict_inputs", "predict_segment", "predict_write",
    "export", "onnx_graph", "capture",
}  # fmt: skip
#: What each engine module may import from engine/ (besides itself).
ENGINE_ALLOWED = {
    # shared by both sides
    "checkpoint": set(),
    "precision": set(),
    "distributed": set(),
    "capture": set(),
    "threads": set(),
    "loaders": {"distributed"},
    "inference": {"precision"},
    "evaluator": {"inference"},
    # inference: a run's checkpoint and model, evaluation, prediction, export
    "run": {"checkpoint", "inference"},
    "evaluate": {"evaluator", "inference", "loaders", "precision", "run", "threads"},
    "predict_inputs": set(),
    "predict_segment": {"inference", "predict_inputs"},
    "predict_write": {"predict_segment"},
    "predict": {
        "precision", "predict_inputs", "predict_segment", "predict_write", "run", "threads",
    },
    "onnx_graph": {"capture"},
    "export": {"onnx_graph", "run"},
    # training, on top of everything
    "schedule": set(),
    "tensorboard": set(),
    "progress": set(),
    "batch_size": {"distributed", "precision"},
    "optim": {"schedule"},
    "steps": {"distributed", "optim", "precision"},
    "step_log": {"distributed"},
    "compile_mode": {"batch_size", "distributed"},
    "run_dir": {"checkpoint", "distributed"},
    "timeline": {"run_dir"},
    "validation": {"distributed", "evaluator", "inference", "loaders"},
    "resume": {"distributed", "run", "run_dir"},
    "trainer": {
        "batch_size", "compile_mode", "distributed", "evaluator", "inference", "loaders", "optim", "precision",
        "progress", "resume", "run", "run_dir", "step_log", "steps", "tensorboard", "threads",
        "timeline", "validation",
    },
}  # fmt: skip


def engine_modules() -> set[str]:
    return {path.stem for path in ENGINE.glob("*.py") if path.stem != "__init__"}


def engine_imports(module: str) -> set[str]:
    """The engine modules ``engine/<module>.py`` imports, in any spelling (``from
    mmseg_heads.engine.x import …``, ``from mmseg_heads.engine import x``, ``import
    mmseg_heads.engine.x``, ``from .x import …``), inside functions too."""
    known = engine_modules()
    found = set()
    for node in ast.walk(ast.parse((ENGINE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1:
                continue  # another layer of the package
            base = ("mmseg_heads.engine" if node.level else "") + (
                f"{'.' if node.level and node.module else ''}{node.module or ''}"
            )
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["mmseg_heads", "engine"] and len(parts) > 2 and parts[2] in known:
                found.add(parts[2])
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    return {module: engine_imports(module) for module in engine_modules()}


def chain_to_training(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import chain from ``start`` to a training module, or ``None``."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        module = queue.pop(0)
        if module in TRAINING:
            chain = [module]
            while parents[chain[-1]] is not None:
                chain.append(parents[chain[-1]])
            return chain[::-1]
        for name in sorted(graph.get(module, ())):
            if name not in parents:
                parents[name] = module
                queue.append(name)
    return None


def test_every_engine_module_is_placed():
    """A new engine module is placed on a side (and given its allowed imports) when added."""
    assert engine_modules() == set(ENGINE_ALLOWED), "add it to ENGINE_ALLOWED and a side"
    assert TRAINING | INFERENCE == set(ENGINE_ALLOWED) and not TRAINING & INFERENCE


@pytest.mark.parametrize("module", sorted(ENGINE_ALLOWED))
def test_engine_module_imports_only_what_it_may(module):
    wrong = engine_imports(module) - ENGINE_ALLOWED[module]
    assert not wrong, f"engine/{module}.py imports {sorted(wrong)} (see ENGINE_ALLOWED)"


@pytest.mark.parametrize("module", sorted(INFERENCE))
def test_inference_never_reaches_training(module):
    """Evaluation, prediction, export and run loading import no training module, directly or
    through another module: the allowed imports say so, and so do the files."""
    for graph in (ENGINE_ALLOWED, import_graph()):
        chain = chain_to_training(graph, module)
        assert chain is None, f"{' -> '.join(chain)}: inference imports training"


@pytest.mark.parametrize("module", sorted(INFERENCE))
@pytest.mark.parametrize("how", ["directly", "through a helper"])
def test_an_import_of_the_trainer_would_be_caught(module, how):
    """The check above fails for any inference module that starts to import the trainer, or
    a module that imports it."""
    graph = import_graph()
    if how == "directly":
        graph[module] = graph[module] | {"trainer"}
    else:
        graph["helper"] = {"trainer"}
        graph[module] = graph[module] | {"helper"}
    assert chain_to_training(graph, module) is not None
