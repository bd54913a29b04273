"""Evaluate a checkpoint on a split of its own data spec or of another one with the same tasks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mmseg_heads.config import Config, config_from_dict
from mmseg_heads.data.spec import DataSpec, data_spec_from_dict, load_data_spec
from mmseg_heads.engine.checkpoint import load_checkpoint, resolve_checkpoint
from mmseg_heads.engine.evaluator import evaluate_model
from mmseg_heads.engine.loaders import eval_loader
from mmseg_heads.engine.precision import resolve_precision
from mmseg_heads.engine.trainer import model_from_config
from mmseg_heads.errors import UserError

log = logging.getLogger(__name__)


def spec_from_checkpoint(state: dict) -> DataSpec:
    return data_spec_from_dict(
        state["data_spec"], Path(state["data_spec_path"]), data_root=state["data_root"]
    )


def check_same_tasks(spec: DataSpec, reference: DataSpec, checkpoint: Path) -> None:
    """An external spec must have the checkpoint's modalities (and channels) and tasks (and classes)."""
    ours, theirs = reference.describe(), spec.describe()
    for key in ("modalities", "tasks"):
        if ours[key] != theirs[key]:
            raise UserError(
                f"{key} {theirs[key]} differ from the checkpoint's {ours[key]} ({checkpoint})",
                file=spec.path,
                field=key,
            )


def load_run(
    checkpoint: str | Path, data: str | Path | None = None
) -> tuple[Config, torch.nn.Module, dict, Path]:
    """``(config, model with weights, checkpoint state, checkpoint path)``."""
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    spec = spec_from_checkpoint(state)
    if data is not None:
        external = load_data_spec(data)
        check_same_tasks(external, spec, path)
        spec = external
    config = config_from_dict(state["config"], spec, Path(state["config_path"]))
    model = model_from_config(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(
            f"weights do not fit the model its config describes ({str(exc)[:300]})", file=path
        ) from exc
    return config, model, state, path


def evaluate(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate; returns the report dict (fields described in ``docs/metrics.md``)."""
    config, model, state, path = load_run(checkpoint, data)
    split = split or config.eval["split"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(config.train["precision"], device)
    loader = eval_loader(config.spec, split, config.train["batch_size"], config.train["workers"])
    matrices = evaluate_model(
        model.to(device), loader, config.spec, device=device, precision=precision, progress=progress
    )
    beta = config.eval["beta"]
    return {
        "schema_version": 1,
        "split": split,
        "data_spec": str(config.spec.path),
        "checkpoint": str(path),
        "epoch": state["epoch"],
        "samples": len(loader.dataset),
        "precision": precision,
        "tasks": {
            task: matrix.summary(beta)
            | {"annotated_on": list(config.spec.tasks[task].annotated_on)}
            for task, matrix in matrices.items()
        },
    }
