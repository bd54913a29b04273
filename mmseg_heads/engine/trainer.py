"""Training: reads top to bottom, one epoch = train steps, validation, checkpoints, a log line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from mmseg_heads.atomic import check_free_space, checkpoint_bytes, write_atomic
from mmseg_heads.config import Config, task_loss_terms
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.engine.batch_size import Shapes, choose_batch_size
from mmseg_heads.engine.checkpoint import load_checkpoint, save_checkpoint
from mmseg_heads.engine.distributed import (
    SINGLE_PROCESS,
    World,
    all_reduce_min,
    average_gradients,
    barrier,
    broadcast_buffers,
    close_world,
    gather_objects,
    init_world,
)
from mmseg_heads.engine.evaluator import evaluate_model, to_device
from mmseg_heads.engine.loaders import eval_loader, train_dataset, train_loader
from mmseg_heads.engine.precision import autocast, check_precision, grad_scaler, resolve_precision
from mmseg_heads.engine.schedule import lr_factor
from mmseg_heads.engine.tensorboard import log_epoch, open_writer, writer_class
from mmseg_heads.errors import UserError
from mmseg_heads.losses.multitask import MultiTaskLoss
from mmseg_heads.losses.task_loss import TaskLoss
from mmseg_heads.metrics.confusion import ConfusionMatrix
from mmseg_heads.metrics.diagnostics import BatchDiagnostics, foreground_counts
from mmseg_heads.metrics.functional import confusion_matrix, predicted_classes
from mmseg_heads.models.build import build_model
from mmseg_heads.models.model import MultiTaskSegmenter

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_from_config(config: Config) -> MultiTaskSegmenter:
    """Build the model; a user error from inside the model names the config file."""
    try:
        return _build(config)
    except UserError as exc:
        exc.file = exc.file or str(config.path)
        raise


def _build(config: Config) -> MultiTaskSegmenter:
    return build_model(
        config.model,
        modalities=config.spec.input_channels(),
        tasks={t.name: t.num_classes for t in config.spec.tasks.values()},
    )


def loss_from_config(config: Config) -> MultiTaskLoss:
    tasks = {
        task: TaskLoss(task_loss_terms(config.loss, task), ignore_index=IGNORE_INDEX)
        for task in config.spec.tasks
    }
    return MultiTaskLoss(
        tasks, config.loss["task_weights"], weighting=config.loss["task_weighting"]
    )


def selection_score(summaries: dict[str, dict], select_by: str) -> float:
    """The number ``best.pt`` is chosen by: a task's macro foreground F, or their mean."""
    if select_by != "mean_foreground_f":
        return summaries[select_by]["macro_foreground_f"] or 0.0
    values = [
        s["macro_foreground_f"] for s in summaries.values() if s["macro_foreground_f"] is not None
    ]
    return sum(values) / len(values) if values else 0.0


def holds_run(run_dir: Path) -> bool:
    """A run has started once it logged an epoch or saved a checkpoint."""
    return (run_dir / "metrics.jsonl").exists() or any((run_dir / "checkpoints").glob("*.pt"))


def prepare_run_dir(config: Config, world: World = SINGLE_PROCESS) -> Path:
    """Create the run directory; one that already holds a run is never overwritten.

    Every process checks (so all stop with the same message); rank 0 alone writes.
    """
    run_dir = config.run_dir()
    if holds_run(run_dir):
        raise UserError(
            f"run directory {run_dir} already holds a run; continue it with `--resume auto`, or set "
            f"another `train.out` (e.g. train.out={run_dir}_2)",
            file=config.path,
            field="train.out",
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create run directory {run_dir}: {exc}", file=config.path, field="train.out"
        ) from exc
    if world.is_main:
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump({**config.raw, "data": str(config.spec.path.resolve())}, sort_keys=False)
        )
        shutil.copyfile(config.spec.path, run_dir / "data_spec.yaml")
    barrier(world)
    return run_dir


def spec_hash(spec_path: Path) -> str:
    return hashlib.sha256(spec_path.read_bytes()).hexdigest()


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


def _append_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


def _optimizer(
    model: torch.nn.Module, criterion: torch.nn.Module, train_cfg: dict
) -> torch.optim.Optimizer:
    """Two parameter groups: encoders at ``lr × encoder_lr_mult``, everything else at ``lr``."""
    encoder_ids = {id(p) for p in model.trunk.encoders.parameters()}
    encoders = [p for p in model.parameters() if id(p) in encoder_ids]
    rest = [p for p in model.parameters() if id(p) not in encoder_ids] + list(
        criterion.parameters()
    )
    lr, wd = train_cfg["lr"], train_cfg["weight_decay"]
    groups = [
        {"params": rest, "lr": lr},
        {"params": encoders, "lr": lr * train_cfg["encoder_lr_mult"]},
    ]
    if train_cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)
    # fused: one kernel for all parameters (measured 1.4× faster steps on the CPU, bench/whatif.py)
    if train_cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd, fused=True)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=wd, fused=True)


class Trainer:
    """Owns one run: model, loss, optimizer, schedule, loaders, run directory and logs.

    ``fit()`` runs every epoch: training steps, validation, ``metrics.jsonl`` lines, checkpoints
    (``last.pt`` every epoch, ``best.pt`` when ``eval.select_by`` improves, ``epoch_<N>.pt``
    every ``train.checkpoint_every`` epochs). ``resume`` continues a run from its ``last.pt``
    and reproduces the uninterrupted run exactly on the CPU.

    Under ``torchrun`` every process runs this same code on its shard of each epoch; the model is
    wrapped in DistributedDataParallel, validation confusion matrices are summed over processes,
    and rank 0 alone writes the run directory.
    """

    def __init__(self, config: Config, *, progress: bool = True, resume: Path | None = None):
        self.config = config
        train_cfg = config.train
        self.world = init_world()
        if not self.world.is_main:
            logging.getLogger("mmseg_heads").setLevel(logging.WARNING)  # one log, rank 0's
        self.progress = progress and self.world.is_main
        self.device = self.world.device
        if self.device.type == "cuda":
            # Fixed-size crops: cuDNN times its algorithms once per shape and keeps the fastest
            # (as MMSegmentation's cudnn_benchmark default does).
            torch.backends.cudnn.benchmark = True
        state = load_checkpoint(resume / "checkpoints" / "last.pt") if resume else None
        self.precision = resolve_precision(train_cfg["precision"], self.device)
        check_precision(self.precision, self.device, file=str(config.path), field="train.precision")
        # Processes differ in augmentation and dropout draws; DDP gives all rank 0's weights.
        seed_everything(train_cfg["seed"] + self.world.rank)
        self.dataset = train_dataset(config.spec, train_cfg)
        self._check_world_fits_data()
        # Weight-file problems surface here, before any file of the run is written.
        self.model = model_from_config(config).to(self.device, memory_format=torch.channels_last)
        self.model = self._maybe_sync_batchnorm(self.model)
        self.criterion = loss_from_config(config).to(self.device)
        self.batch = self._resolve_batch_size(state)
        self.val_loader = eval_loader(
            config.spec, config.eval["split"], self.batch, train_cfg["workers"], self.world
        )
        self.trained = self._compiled(self._wrap(self.model))
        self.optimizer = _optimizer(self.model, self.criterion, train_cfg)
        self.scaler = grad_scaler(self.precision, self.device)
        steps_per_epoch = [self._steps_in(epoch) for epoch in range(1, train_cfg["epochs"] + 1)]
        warmup = round(train_cfg["warmup_epochs"] * steps_per_epoch[0])
        schedule = partial(
            lr_factor,
            total=sum(steps_per_epoch),
            warmup=warmup,
            schedule=train_cfg["schedule"],
            step_size=train_cfg["step_epochs"] * steps_per_epoch[-1],
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.diagnostics = BatchDiagnostics()
        self.epoch = 0
        self.step = 0
        self.best = -1.0
        # A missing TensorBoard stops the run before any file of it is written.
        tensorboard = writer_class(
            train_cfg["tensorboard"] and self.world.is_main, file=str(config.path)
        )
        self._check_free_space(resume or config.run_dir(), done=state["epoch"] if state else 0)
        if resume is None:
            self.run_dir = prepare_run_dir(config, self.world)
        else:
            self.run_dir = resume
            self._resume(state)
        self.writer = open_writer(tensorboard, self.run_dir, self.epoch)
        log.info(
            "run directory %s; precision %s on %s; batch size %d%s",
            self.run_dir, self.precision, self.device, self.batch,
            f" per process × {self.world.size} processes" if self.world.distributed else "",
        )  # fmt: skip

    # --- set-up ------------------------------------------------------------------------------
    def _check_world_fits_data(self) -> None:
        if len(self.dataset) < self.world.size:
            raise UserError(
                f"the training split has {len(self.dataset)} samples, fewer than the "
                f"{self.world.size} processes torchrun started",
                file=self.config.path,
                field="train",
            )

    def _check_free_space(self, run_dir: Path, *, done: int) -> None:
        """Stop before the first epoch when the checkpoints still to come will not fit.

        ``done``: epochs already trained (a resumed run needs only the rest).
        """
        train_cfg = self.config.train
        params = sum(p.numel() for p in self.model.parameters()) + sum(
            p.numel() for p in self.criterion.parameters()
        )
        slots = 1 if train_cfg["optimizer"] == "sgd" else 2  # momentum; Adam's two moments
        every = train_cfg["checkpoint_every"]
        numbered = (train_cfg["epochs"] // every - done // every) if every else 0
        folder = run_dir / "checkpoints"
        new = sum(not (folder / name).exists() for name in ("last.pt", "best.pt"))
        files = new + numbered + 1  # +1: an atomic save holds its temp file beside the old one
        check_free_space(
            folder,
            files * checkpoint_bytes(params, slots),
            file=self.config.path,
            field="train.out",
            what=f"{files} checkpoints of {params / 1e6:.1f} M parameters: model + optimizer state",
        )

    def _maybe_sync_batchnorm(self, model: MultiTaskSegmenter) -> MultiTaskSegmenter:
        if not self.config.train["sync_batchnorm"]:
            return model
        if not self.world.distributed:
            log.info("train.sync_batchnorm has no effect in a single process")
            return model
        if self.device.type != "cuda":
            raise UserError(
                "SyncBatchNorm runs only on CUDA devices (torch has no CPU version); set it false "
                "for CPU training (each process then normalises over its own batch)",
                file=self.config.path,
                field="train.sync_batchnorm",
            )
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP under torchrun, the model itself otherwise.

        ``find_unused_parameters``: heads of tasks without a label in a batch, encoders of
        modalities dropped by ``modality_dropout`` and frozen encoders take no part in some steps.
        """
        if not self.world.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=True
        )

    def _compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        """``train.compile``: training steps through ``torch.compile`` (wrapping DDP, as PyTorch
        recommends). Checkpoints and validation use ``self.model``, the eager module itself, so
        their keys and results do not depend on the option."""
        return torch.compile(module) if self.config.train["compile"] else module

    def _resolve_batch_size(self, state: dict | None) -> int:
        """``train.batch_size``, measured on this machine when it is ``auto`` (and printed)."""
        requested = self.config.train["batch_size"]
        if requested != "auto":
            return requested
        if state is not None and "batch_size" in state:
            log.info("batch_size auto: %d, as chosen when this run started", state["batch_size"])
            return state["batch_size"]
        shapes = Shapes.from_spec(self.config.spec, self.config.train["crop"])
        limit = len(self.dataset) // self.world.size
        size, reason = choose_batch_size(
            self.model, shapes, self.device, self.precision, limit=limit
        )
        size = all_reduce_min(size, self.world)  # every process steps with the same batch size
        log.info("batch_size auto: %d per process; %s", size, reason)
        return size

    # --- epochs, phases and batches ------------------------------------------------------------
    def frozen(self, epoch: int) -> bool:
        return epoch <= self.config.train["freeze_encoders_epochs"]

    def batch_size(self, epoch: int) -> int:
        unfreeze = self.config.train["unfreeze_batch_size"]
        return self.batch if self.frozen(epoch) or unfreeze is None else unfreeze

    def _steps_in(self, epoch: int) -> int:
        size = self.batch_size(epoch)
        samples = len(self.dataset) // self.world.size  # this process's shard of the epoch
        batches = samples // size if samples > size else 1
        return max(1, -(-batches // self.config.train["accumulate"]))

    def _set_encoders_frozen(self, frozen: bool) -> None:
        """Frozen encoders keep their weights *and* BatchNorm statistics (eval mode)."""
        for encoder in self.model.trunk.encoders.values():
            encoder.requires_grad_(not frozen)
            encoder.train(not frozen)

    # --- one epoch ---------------------------------------------------------------------------
    def train_epoch(self) -> tuple[dict, list[dict]]:
        """Returns the epoch's mean losses and one diagnostics record per batch."""
        self.trained.train()
        self._set_encoders_frozen(self.frozen(self.epoch))
        loader = train_loader(
            self.dataset, self.config.train, self.batch_size(self.epoch), self.epoch, self.world
        )
        accumulate = self.config.train["accumulate"]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        skipped: dict[str, int] = {}
        batches = []
        bar = tqdm(
            loader, desc=f"epoch {self.epoch}", disable=None if self.progress else True, leave=False
        )
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(bar):
            batch = to_device(batch, self.device)
            boundary = (index + 1) % accumulate == 0 or index + 1 == len(loader)
            with self._gradient_sync(boundary):
                logits, loss, parts = self._forward_backward(batch, accumulate)
            if boundary:
                self._optimizer_step()
            for task in parts["skipped"]:
                skipped[task] = skipped.get(task, 0) + 1
            batches.append(self._diagnose(logits, batch))
            values = {
                "loss": loss.detach(),
                **{k: v for k, v in parts.items() if torch.is_tensor(v)},
            }
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1
            bar.set_postfix({k: f"{sums[k] / counts[k]:.3f}" for k in sums if "/" not in k})
        sums, counts, skipped = self._summed_over_processes(sums, counts, skipped)
        record = {k: sums[k] / counts[k] for k in sums}
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["frozen_encoders"] = self.frozen(self.epoch)
        if skipped:
            record["skipped_batches"] = skipped
        return record, batches

    def _forward_backward(self, batch: dict, accumulate: int) -> tuple[dict, torch.Tensor, dict]:
        with autocast(self.precision, self.device):
            logits = self.trained(batch["images"])
        logits = {k: v.float() for k, v in logits.items()}
        loss, parts = self.criterion(logits, batch["labels"], batch["has_label"])
        for task in parts["nonfinite"]:
            log.warning(
                "step %d: task %r has a non-finite loss; left out of this step", self.step, task
            )
        if len(parts["skipped"]) + len(parts["nonfinite"]) < len(logits):
            self.scaler.scale(loss / accumulate).backward()
        elif self.world.distributed:
            # Nothing to learn here, but every process must join each step's gradient all-reduce.
            sum(v.sum() for v in logits.values()).mul(0.0).backward()
        return logits, loss, parts

    def _gradient_sync(self, boundary: bool):
        """DDP all-reduces gradients only on the micro-batch that ends an accumulation."""
        if self.world.distributed and not boundary:
            return self.trained.no_sync()
        return contextlib.nullcontext()

    def _summed_over_processes(self, sums: dict, counts: dict, skipped: dict) -> tuple:
        """The epoch's loss sums, counts and skipped batches of every process, merged."""
        if not self.world.distributed:
            return sums, counts, skipped
        merged: tuple[dict, dict, dict] = ({}, {}, {})
        for parts in gather_objects((sums, counts, skipped), self.world):
            for into, part in zip(merged, parts, strict=True):
                for key, value in part.items():
                    into[key] = into.get(key, 0) + value
        return merged

    def _optimizer_step(self) -> None:
        average_gradients(self.criterion, self.world)  # outside DDP: learned task weights
        if any(
            p.grad is not None for group in self.optimizer.param_groups for p in group["params"]
        ):
            if self.config.train["grad_clip"]:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
                torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), self.config.train["grad_clip"]
                )
            self.scaler.step(self.optimizer)  # fp16: skipped when a gradient overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    @torch.no_grad()
    def _diagnose(self, logits: dict[str, torch.Tensor], batch: dict) -> dict:
        """Per-task foreground TP/FP/FN of this training batch; warns on collapse.

        Under torchrun these are rank 0's batches (gathering them would sync every step).
        """
        tasks = {}
        for task, value in logits.items():
            labelled = batch["has_label"][task]
            spec = self.config.spec.tasks[task]
            matrix = confusion_matrix(
                predicted_classes(value[labelled]),
                batch["labels"][task][labelled],
                spec.num_classes,
                IGNORE_INDEX,
                validate=False,  # this step's cross-entropy has rejected out-of-range labels
            )
            tasks[task] = foreground_counts(matrix)
            for warning in self.diagnostics.update(task, tasks[task]):
                log.warning("step %d: %s", self.step, warning)
        return {"epoch": self.epoch, "split": "train_batch", "step": self.step, "tasks": tasks}

    def validate(self) -> dict[str, ConfusionMatrix]:
        """Confusion matrices of the validation split, summed over every process's shard."""
        broadcast_buffers(self.model, self.world)  # evaluate rank 0's BatchNorm statistics
        matrices = evaluate_model(
            self.model,
            self.val_loader,
            self.config.spec,
            device=self.device,
            precision=self.precision,
        )
        return {task: matrix.all_reduce() for task, matrix in matrices.items()}

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, summaries: dict, rng_per_rank: list[dict]) -> dict:
        config, spec = self.config, self.config.spec
        return {
            "model": self.model.state_dict(),
            "loss": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "batch_size": self.batch,
            "world_size": self.world.size,
            "rng": rng_per_rank[0],
            "rng_per_rank": rng_per_rank,
            "config": config.raw,
            "config_path": str(config.path.resolve()),
            "data_spec": spec.raw,
            "data_spec_path": str(spec.path.resolve()),
            "data_spec_sha256": spec_hash(spec.path),
            "data_root": str(spec.root.resolve()),
            "classes": {t.name: list(t.classes) for t in spec.tasks.values()},
            "val": {task: s["macro_foreground_f"] for task, s in summaries.items()},
        }

    def _resume(self, state: dict) -> None:
        checkpoint = self.run_dir / "checkpoints" / "last.pt"
        for part, module in (("model", self.model), ("loss", self.criterion)):
            try:
                module.load_state_dict(state[part])
            except (RuntimeError, ValueError, KeyError) as exc:
                how = state_differences(module, state.get(part) or {}) or _first_line(exc)
                raise self._misfit(checkpoint, f"{part}: {how}") from exc
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise self._misfit(checkpoint, f"optimizer: {_first_line(exc)}") from exc
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]
        set_rng_states(self._own_rng_state(state))
        if state["data_spec_sha256"] != spec_hash(self.config.spec.path):
            log.warning("the data spec changed since this run started (%s)", self.config.spec.path)
        if self.world.is_main:
            _truncate_log(self.run_dir / "metrics.jsonl", self.epoch)
        barrier(self.world)
        log.info("resuming %s after epoch %d (step %d)", self.run_dir, self.epoch, self.step)

    def _misfit(self, checkpoint: Path, how: str) -> UserError:
        """The error for a run whose checkpoint the model of this config cannot load."""
        return UserError(
            f"the checkpoint of run {self.run_dir} does not fit the model {self.config.path} "
            f"describes (was `model` or `loss` changed since the run started?); {how}; resume "
            f"with the run's own config ({self.run_dir / 'config.yaml'}), or start a new run "
            "without --resume",
            file=checkpoint,
            field="--resume",
        )

    def _own_rng_state(self, state: dict) -> dict:
        """This process's RNG state; with another number of processes, the run goes on inexactly."""
        per_rank = state.get("rng_per_rank", [state["rng"]])
        if len(per_rank) != self.world.size:
            log.warning(
                "this run was trained by %d process(es) and resumes with %d: it continues, but "
                "its random draws differ from an uninterrupted run",
                len(per_rank), self.world.size,
            )  # fmt: skip
        return per_rank[min(self.world.rank, len(per_rank) - 1)]

    def _save(self, summaries: dict, improved: bool) -> None:
        rng_per_rank = gather_objects(rng_states(), self.world)  # a collective: every process
        if not self.world.is_main:
            return
        state = self.checkpoint(summaries, rng_per_rank)
        folder = self.run_dir / "checkpoints"
        every = self.config.train["checkpoint_every"]
        names = [f"epoch_{self.epoch}.pt"] if every and self.epoch % every == 0 else []
        names += ["best.pt"] if improved else []
        names += ["last.pt"]  # last: resume never starts before best exists
        # One file, the other names hard links to it: an epoch's state takes its space once.
        save_checkpoint(state, *(folder / name for name in names))

    # --- the run -----------------------------------------------------------------------------
    def fit(self) -> Path:
        try:
            return self._fit()
        except KeyboardInterrupt:
            done = self.epoch - 1
            if done >= 1:
                log.warning(
                    "interrupted in epoch %d: %s holds epoch %d; continue with "
                    "`mmseg-heads train %s --resume %s`",
                    self.epoch, self.run_dir / "checkpoints" / "last.pt", done, self.config.path, self.run_dir,
                )  # fmt: skip
            else:
                log.warning("interrupted in epoch 1, before any checkpoint: start again to train")
            raise

    def close(self) -> None:
        """Flush TensorBoard and leave the process group (torchrun waits for every process)."""
        if self.writer is not None:
            self.writer.close()
        close_world(self.world)

    def _fit(self) -> Path:
        eval_cfg = self.config.eval
        epochs = self.config.train["epochs"]
        while self.epoch < epochs:
            self.epoch += 1
            started = time.perf_counter()
            train_record, batch_records = self.train_epoch()
            matrices = self.validate()
            summaries = {t: m.summary(eval_cfg["beta"]) for t, m in matrices.items()}
            score = selection_score(summaries, eval_cfg["select_by"])
            improved = score > self.best
            self.best = max(self.best, score)
            seconds = time.perf_counter() - started
            val_record = _val_record(self.epoch, eval_cfg, score, summaries, matrices)
            if self.world.is_main:
                _append_jsonl(
                    self.run_dir / "metrics.jsonl",
                    [
                        *batch_records,
                        {"epoch": self.epoch, "split": "train", **train_record, "seconds": seconds},
                        val_record,
                    ],
                )
                log_epoch(self.writer, self.epoch, train_record, val_record)
            self._save(summaries, improved)
            f_text = ", ".join(
                f"{t} F {s['macro_foreground_f'] or 0:.3f}" for t, s in summaries.items()
            )
            log.info("epoch %d/%d: loss %.4f; %s", self.epoch, epochs, train_record["loss"], f_text)
        return self.run_dir


def _truncate_log(path: Path, epoch: int) -> None:
    """Drop the lines of epochs after ``epoch`` (written before a crash); rewritten atomically."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("epoch", 0) <= epoch]
    if len(kept) != len(lines):
        write_atomic(path, "".join(line + "\n" for line in kept))


def _val_record(
    epoch: int, eval_cfg: dict, score: float, summaries: dict, matrices: dict[str, ConfusionMatrix]
) -> dict:
    """The epoch's validation line: headline scores, F per class and the confusion matrices."""
    headline = ("macro_foreground_f", "macro_f", "micro_f", "pixel_accuracy")
    return {
        "epoch": epoch,
        "split": eval_cfg["split"],
        "select_by": eval_cfg["select_by"],
        "score": score,
        "tasks": {
            t: {k: s[k] for k in headline}
            | {"f": {c: v["f"] for c, v in s["per_class"].items()}}
            | {"confusion": matrices[t].matrix.cpu().tolist()}
            for t, s in summaries.items()
        },
    }


def train(config: Config, *, progress: bool = True, resume: str | Path | None = None) -> Path:
    """Train the model a config describes; returns the run directory.

    ``resume``: ``"auto"`` (the config's run directory) or a run directory to continue.
    """
    trainer = Trainer(config, progress=progress, resume=resolve_resume(config, resume))
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _first_line(exc: BaseException) -> str:
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


def resolve_resume(config: Config, resume: str | Path | None) -> Path | None:
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
