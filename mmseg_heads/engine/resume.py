"""Resuming a run from its ``last.pt``: which run, the states put back, the RNG streams.

A resumed run reproduces the uninterrupted one exactly on the CPU: every state that decides what
comes next (weights, optimizer, schedule, loss scale, every process's RNG) is in the checkpoint.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmseg_heads.config import Config, config_from_dict
from mmseg_heads.data.spec import check_data_root
from mmseg_heads.engine.distributed import World, barrier
from mmseg_heads.engine.run import RunCheckpoint, spec_from_checkpoint, spec_hash
from mmseg_heads.engine.run_dir import append_jsonl, truncate_log, write_run_config
from mmseg_heads.errors import UserError

log = logging.getLogger(__name__)


def resolve_resume(config: Config, resume: str | Path | None) -> Path | None:
    """The run directory ``--resume`` names (``auto``: the config's), checked to hold a run."""
    if resume is None:
        return None
    run_dir = config.run_dir() if str(resume) == "auto" else Path(resume)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise UserError(
            f"nothing to resume in {run_dir} (no checkpoints/last.pt); start it without --resume",
            file=config.path,
            field="--resume",
        )
    return run_dir


#: Keys that may differ on resume without changing what the run computes.
SAME_RUN_KEYS = frozenset({"train.out", "train.workers", "train.tensorboard"})


def run_config(run_dir: Path, data_root: str | Path | None = None) -> Config:
    """The config a run was started with, as its ``last.pt`` keeps it (the same as the run's
    ``config.yaml``): what ``train --resume RUN_DIR`` continues with. ``data_root``
    (``--data-root``) replaces the data root it trained on: data that moved is not a change of
    the run."""
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise UserError(
            f"nothing to resume in {run_dir} (no checkpoints/last.pt)", field="--resume"
        )
    if data_root is not None:
        check_data_root(Path(data_root))
    state = RunCheckpoint.load(checkpoint)
    spec = spec_from_checkpoint(state, data_root)
    config = config_from_dict(state.config, spec, Path(state.config_path))
    config.raw["train"]["out"] = str(run_dir)
    return config


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists and scalars are leaves)."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, path + ".")
        else:
            out[path] = value
    return out


def config_changes(run: Config, given: Config) -> dict[str, tuple[object, object]]:
    """``{dotted key: (the run's value, the given value)}`` for every setting that differs; the
    data spec is compared as the file it resolves to, ``SAME_RUN_KEYS`` not at all."""
    before = flatten({k: v for k, v in run.raw.items() if k != "data"})
    after = flatten({k: v for k, v in given.raw.items() if k != "data"})
    changes = {
        key: (before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if key not in SAME_RUN_KEYS and before.get(key) != after.get(key)
    }
    if run.spec.path.resolve() != given.spec.path.resolve():
        changes["data"] = (str(run.spec.path.resolve()), str(given.spec.path.resolve()))
    return changes


def changes_error(run_dir: Path, changes: dict, file: Path) -> UserError:
    listing = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in changes.items())
    return UserError(
        f"run {run_dir} was started with other settings: {listing}. Continue it as it was with "
        f"`mmseg-heads train --resume {run_dir}`, or add --resume-with-changes to apply these",
        file=file,
        field="--resume",
    )


def rng_states() -> dict:
    """Every RNG state, as types ``torch.load(weights_only=True)`` accepts."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(key.copy()),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state(
        ("MT19937", numpy["key"].numpy(), numpy["pos"], numpy["has_gauss"], numpy["gauss"])
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def own_rng_state(checkpoint: RunCheckpoint, world: World) -> dict:
    """This process's RNG state; with another number of processes, the run goes on inexactly."""
    per_rank = checkpoint.rng_per_rank
    if per_rank is None:  # a checkpoint from before torchrun training
        per_rank = [checkpoint.rng]
    if len(per_rank) != world.size:
        log.warning(
            "this run was trained by %d process(es) and resumes with %d: it continues, but "
            "its random draws differ from an uninterrupted run",
            len(per_rank), world.size,
        )  # fmt: skip
    return per_rank[min(world.rank, len(per_rank) - 1)]


def misfit_error(run_dir: Path, config_path: Path, checkpoint: Path, how: str) -> UserError:
    """The error for a run whose checkpoint the model of this config cannot load."""
    return UserError(
        f"the checkpoint of run {run_dir} does not fit the model {config_path} "
        f"describes (was `model` or `loss` changed since the run started?); {how}; resume "
        f"with the run's own config ({run_dir / 'config.yaml'}), or start a new run "
        "without --resume",
        file=checkpoint,
        field="--resume",
    )


def restore_states(
    checkpoint: RunCheckpoint,
    *,
    model: torch.nn.Module,
    loss: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    misfit: Callable[[str], UserError],
) -> None:
    """Load the checkpoint's states into the run's objects.

    Raises:
        UserError: from ``misfit(how)``, where the model, loss or optimizer state does not fit
            (``how``: the keys that differ, or the first line of torch's error).
    """
    for part, target in (("model", model), ("loss", loss), ("optimizer", optimizer)):
        state = getattr(checkpoint, part)
        try:
            if state is None:  # a checkpoint from before the trainer kept it
                raise KeyError(part)
            target.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            differences = (
                state_differences(target, state or {})
                if isinstance(target, torch.nn.Module)
                else ""
            )
            raise misfit(f"{part}: {differences or first_line(exc)}") from exc
    scheduler.load_state_dict(checkpoint.scheduler)
    if checkpoint.scaler is not None:
        scaler.load_state_dict(checkpoint.scaler)


def apply_changes(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    fresh: list[dict],
    changes: dict[str, tuple[object, object]],
) -> None:
    """``--resume-with-changes``: the optimizer and schedule follow the new config (``fresh``:
    its param groups, read before the run's states replaced them): its learning rates and weight
    decay, the schedule over its epochs or steps at the step the run reached. Each change is
    logged."""
    for key, (before, after) in changes.items():
        log.warning("resuming with a change: %s %r -> %r", key, before, after)
    if not changes:
        return
    scheduler.base_lrs = [g["initial_lr"] for g in fresh]
    factors = [fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
    for group, new, factor in zip(optimizer.param_groups, fresh, factors, strict=True):
        group["initial_lr"], group["weight_decay"] = new["initial_lr"], new["weight_decay"]
        group["lr"] = new["initial_lr"] * factor


def reopen_run(
    config: Config, run_dir: Path, state: RunCheckpoint, changes: dict, world: World
) -> None:
    """The run directory taken up again after ``state`` (its ``last.pt``): ``metrics.jsonl``
    loses the lines of later epochs (written before a crash); with ``changes``, the run's
    config.yaml holds the new config and ``metrics.jsonl`` a ``resume`` line listing them. A
    data spec that changed since the run started, or data read from another root, is
    reported (the next checkpoints record that root)."""
    spec, now = config.spec, spec_hash(config.spec.path)
    if now is None:
        log.info("data spec %s is gone: the run goes on with its own copy of it", spec.path)
    elif state.data_spec_sha256 != now:
        log.warning("the data spec changed since this run started (%s)", spec.path)
    if str(spec.root.resolve()) != state.data_root:
        log.info("data root: %s (this run read %s before)", spec.root.resolve(), state.data_root)
    if world.is_main:
        inside = state.step if state.epoch_batches else None  # saved inside an epoch
        truncate_log(run_dir / "metrics.jsonl", state.epoch, inside)
        if changes:  # after the truncation: its `resume` line belongs to the log from here on
            write_run_config(config, run_dir)
            append_jsonl(
                run_dir / "metrics.jsonl",
                [{"epoch": state.epoch, "step": state.step, "split": "resume", "changes": {
                    k: {"run": a, "now": b} for k, (a, b) in changes.items()}}],
            )  # fmt: skip
    barrier(world)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _listing(keys: list[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def state_differences(module: torch.nn.Module, state: dict, limit: int = 5) -> str:
    """How a state dict differs from ``module``'s, on one line: the keys the module has and the
    state lacks, the keys the state has and the module lacks, and the keys whose tensors differ
    in shape, each with its count and its first names (about ``limit`` names, shared among the
    kinds found). ``""`` when none differs."""
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    reshaped = [
        f"{key} ({'×'.join(map(str, state[key].shape))} in the checkpoint, "
        f"{'×'.join(map(str, own[key].shape))} in the model)"
        for key in own
        if key in state
        and hasattr(state[key], "shape")
        and tuple(state[key].shape) != tuple(own[key].shape)
    ]
    kinds = [
        (f"{len(keys)} {label}", keys)
        for label, keys in (
            ("keys of the model missing from the checkpoint", missing),
            ("keys of the checkpoint the model lacks", unexpected),
            ("keys of another shape", reshaped),
        )
        if keys
    ]
    each = max(1, -(-limit // len(kinds))) if kinds else limit
    return "; ".join(f"{what}: {_listing(keys, each)}" for what, keys in kinds)
