"""A trained run as inference sees it: its checkpoint, its model and loss, its data spec.

:class:`RunCheckpoint` is what ``checkpoints/*.pt`` holds (the trainer writes it, everything else
reads it); :func:`load_run` gives the model of a run with its weights. Nothing here knows how a
run is trained: evaluation, prediction and export import this module, never the trainer.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from mmseg_heads.config import Config, config_from_dict, task_loss_terms
from mmseg_heads.data.spec import (
    IGNORE_INDEX,
    DataSpec,
    data_spec_from_dict,
    load_data_spec,
    preprocessing_differences,
)
from mmseg_heads.engine.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from mmseg_heads.engine.inference import Inference
from mmseg_heads.errors import UserError
from mmseg_heads.losses.multitask import MultiTaskLoss
from mmseg_heads.losses.task_loss import TaskLoss
from mmseg_heads.models.build import build_model
from mmseg_heads.models.model import MultiTaskSegmenter

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RunCheckpoint:
    """One checkpoint of a run: the trainer's state at the end of an epoch or after a step
    inside one (a save of ``train.val_every`` or a ``step_<N>.pt``; ``last.pt`` too, which a run
    resumes from at that very batch) and what the run is.

    :meth:`to_state` is the dict saved in the file (its keys in this order); :meth:`from_state`
    reads one back. Keys that every version of the trainer wrote are required; those that later
    versions added are ``None`` when a checkpoint from before them lacks them (and are then left
    out of :meth:`to_state`, so that the dict read is the dict written).

    Attributes:
        model: the model's ``state_dict``.
        loss: the loss's ``state_dict`` (learned task weights).
        optimizer: the optimizer's ``state_dict``.
        scheduler: the LR scheduler's ``state_dict``.
        scaler: the fp16 ``GradScaler``'s ``state_dict`` (``{}`` when disabled).
        epoch: epochs trained (a state inside an epoch: that epoch, ``epoch_batches`` says where).
        step: optimizer steps taken.
        epoch_batches: batches of ``epoch`` already trained in a state inside it (None: the
            epoch is complete).
        epoch_losses: in a state inside an epoch, its loss sums so far (the epoch's means go
            on as if never stopped).
        best: the best ``eval.select_by`` score so far.
        batch_size: the batch size trained with (what ``batch_size: auto`` measured).
        threads: torch's CPU threads trained with (what ``threads: auto`` chose).
        world_size: processes that trained the run.
        rng: rank 0's RNG states.
        rng_per_rank: every process's RNG states, in rank order.
        config: the experiment config, as loaded.
        config_path: the config file, resolved.
        data_spec: the data spec, as loaded.
        data_spec_path: the data spec file, resolved.
        data_spec_sha256: hash of the data spec file (resume warns when it changed).
        data_root: the data root, resolved.
        classes: ``{task: class names}``.
        val: ``{task: macro foreground F}`` of the latest validation.
    """

    model: dict[str, Any]
    loss: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    epoch: int
    step: int | None = None
    epoch_batches: int | None = None
    epoch_losses: dict[str, Any] | None = None
    best: float | None = None
    batch_size: int | None = None
    threads: int | None = None
    world_size: int | None = None
    rng: dict[str, Any] | None = None
    rng_per_rank: list[dict[str, Any]] | None = None
    config: dict[str, Any]
    config_path: str
    data_spec: dict[str, Any]
    data_spec_path: str
    data_spec_sha256: str | None = None
    data_root: str
    classes: dict[str, list[str]] | None = None
    val: dict[str, float | None] | None = None

    def to_state(self) -> dict[str, Any]:
        """The dict a checkpoint file holds (without the format marker ``save_checkpoint`` adds)."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {name: value for name, value in values if value is not None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunCheckpoint:
        """Read a checkpoint's dict; keys of no field (the format marker) are left out.

        Raises:
            KeyError: a key every checkpoint has is missing.
        """
        return cls(
            **{
                f.name: state[f.name] if f.default is MISSING else state.get(f.name)
                for f in fields(cls)
            }
        )

    @classmethod
    def load(cls, path: str | Path) -> RunCheckpoint:
        """Read a checkpoint file (see :func:`~mmseg_heads.engine.checkpoint.load_checkpoint`)."""
        return cls.from_state(load_checkpoint(path))

    def save(self, path: str | Path, *also: str | Path) -> None:
        """Write atomically, ``also`` as more names of the same file (see ``save_checkpoint``)."""
        save_checkpoint(self.to_state(), path, *also)


def spec_hash(spec_path: Path) -> str | None:
    """SHA-256 of the data spec file; ``None`` once it is gone (a run resumed after its data
    folder moved, spec included, goes on with the spec its checkpoint keeps)."""
    if not spec_path.is_file():
        return None
    return hashlib.sha256(spec_path.read_bytes()).hexdigest()


def describe_run(config: Config) -> dict[str, Any]:
    """The fields of a :class:`RunCheckpoint` that say what the run is: config and data spec."""
    spec = config.spec
    return {
        "config": config.raw,
        "config_path": str(config.path.resolve()),
        "data_spec": spec.raw,
        "data_spec_path": str(spec.path.resolve()),
        "data_spec_sha256": spec_hash(spec.path),
        "data_root": str(spec.root.resolve()),
        "classes": {t.name: list(t.classes) for t in spec.tasks.values()},
    }


def model_from_config(config: Config) -> MultiTaskSegmenter:
    """Build the model; a user error from inside the model names the config file."""
    try:
        return build_model(
            config.model,
            modalities=config.spec.input_channels(),
            tasks={t.name: t.num_classes for t in config.spec.tasks.values()},
        )
    except UserError as exc:
        exc.file = exc.file or str(config.path)
        raise


def loss_from_config(config: Config) -> MultiTaskLoss:
    tasks = {
        task: TaskLoss(task_loss_terms(config.loss, task), ignore_index=IGNORE_INDEX)
        for task in config.spec.tasks
    }
    return MultiTaskLoss(
        tasks, config.loss["task_weights"], weighting=config.loss["task_weighting"]
    )


def spec_from_checkpoint(
    checkpoint: RunCheckpoint, data_root: str | Path | None = None
) -> DataSpec:
    """The data spec the run was trained with, as its checkpoint keeps it; ``data_root``
    replaces the root it was trained on (the data moved: ``train --resume RUN --data-root``)."""
    root = checkpoint.data_root if data_root is None else data_root
    return data_spec_from_dict(
        checkpoint.data_spec, Path(checkpoint.data_spec_path), data_root=root
    )


def check_same_tasks(spec: DataSpec, reference: DataSpec, checkpoint: Path) -> None:
    """An external spec must have the checkpoint's tasks (and classes) and modalities (with their
    channels); it may lack modalities, which the model then runs without."""
    ours, theirs = reference.describe(), spec.describe()
    if ours["tasks"] != theirs["tasks"]:
        raise UserError(
            f"tasks {theirs['tasks']} differ from the checkpoint's {ours['tasks']} ({checkpoint})",
            file=spec.path,
            field="tasks",
        )
    unknown = [m for m in theirs["modalities"] if m not in ours["modalities"]]
    differ = [
        m
        for m, c in theirs["modalities"].items()
        if m not in unknown and c != ours["modalities"][m]
    ]
    if unknown or differ or not theirs["modalities"]:
        raise UserError(
            f"modalities {theirs['modalities']} differ from the checkpoint's "
            f"{ours['modalities']} ({checkpoint}); a spec may leave modalities out, not add or "
            "change them",
            file=spec.path,
            field="modalities",
        )


def load_external_spec(data: str | Path) -> DataSpec:
    """The data spec of ``--data``, read instead of the checkpoint's own."""
    if not Path(data).exists():
        raise UserError("data spec not found", file=data, field="--data")
    return load_data_spec(data)


def run_data_spec(
    checkpoint: RunCheckpoint, path: Path, data: str | Path | None = None
) -> DataSpec:
    """The data spec to read inputs with: ``data`` (checked to have the checkpoint's modalities
    and tasks), else the checkpoint's own. ``path``: the checkpoint file, for messages."""
    spec = spec_from_checkpoint(checkpoint)
    if data is None:
        return spec
    external = load_external_spec(data)
    check_same_tasks(external, spec, path)
    return external


def read_run_checkpoint(run_or_checkpoint: str | Path) -> tuple[RunCheckpoint, Path]:
    """``(checkpoint, its file)`` of a run directory (its ``best.pt``) or a checkpoint file."""
    path = resolve_checkpoint(run_or_checkpoint)
    return RunCheckpoint.load(path), path


class Run(NamedTuple):
    """A run loaded for inference (:func:`load_run`)."""

    config: Config
    model: MultiTaskSegmenter
    checkpoint: RunCheckpoint
    path: Path

    def missing_modalities(self) -> list[str]:
        """The run's modalities that its data spec (``--data``) leaves out."""
        trained = self.checkpoint.data_spec["modalities"]
        return [m for m in trained if m not in self.config.spec.modalities]

    def inference(
        self,
        window: int | None = None,
        overlap: float | None = None,
        tta: tuple[str, ...] | None = None,
    ) -> Inference:
        """The run's ``eval`` inference options with the ones given (flags) replaced, checked
        against the model: a flag's error names the flag, the config's the checkpoint and field.
        """
        inference = Inference.from_eval(
            self.config.eval, self.config.spec.nesting()
        ).with_overrides(window, overlap, tta)
        inference.check(
            self.model.trunk.max_stride,
            field="--window" if window is not None else "eval.window",
            file=None if window is not None else self.path,
        )
        return inference


def load_run(checkpoint: str | Path, data: str | Path | None = None) -> Run:
    """``(config, model with weights, checkpoint, checkpoint path)`` of a run directory or a
    checkpoint file; ``data``: another data spec with the same modalities and tasks."""
    state, path = read_run_checkpoint(checkpoint)
    spec = run_data_spec(state, path, data)
    trained = spec_from_checkpoint(state)
    # The model is the one trained (every modality); inputs are read with ``spec``.
    config = config_from_dict(state.config, trained, Path(state.config_path))
    model = model_from_config(config)
    try:
        model.load_state_dict(state.model)
    except RuntimeError as exc:
        raise UserError(
            f"weights do not fit the model its config describes ({str(exc)[:300]})", file=path
        ) from exc
    run = Run(replace(config, spec=spec), model, state, path)
    if data is not None:
        warn_about_differences(run, trained)
    return run


def warn_about_differences(run: Run, trained: DataSpec) -> None:
    """One warning per preprocessing difference from training and per modality left out."""
    for difference in preprocessing_differences(trained, run.config.spec):
        log.warning("warning: %s; the model sees values unlike those it learnt from", difference)
    missing = run.missing_modalities()
    if missing:
        dropout = run.config.model.get("modality_dropout") or 0
        log.warning(
            "warning: %s has no %s: the model runs without %s (its missing-modality path)%s",
            run.config.spec.path,
            ", ".join(missing),
            "it" if len(missing) == 1 else "them",
            ""
            if dropout
            else "; it was trained without model.modality_dropout, so expect "
            "scores far below those with every modality",
        )


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory of a checkpoint (``RUN/checkpoints/best.pt`` -> ``RUN``)."""
    return (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
