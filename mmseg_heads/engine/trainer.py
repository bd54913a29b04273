"""Training: reads top to bottom, one epoch = train steps, validation, checkpoints, a log line.

The pieces live beside it: the step (``steps``), optimizer and schedule (``optim``), the run
directory and ``metrics.jsonl`` (``run_dir``), resuming (``resume``), the checkpoint (``run``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmseg_heads.atomic import DeferredInterrupt
from mmseg_heads.config import Config
from mmseg_heads.engine.batch_size import Shapes, choose_batch_size
from mmseg_heads.engine.distributed import (
    all_reduce_min,
    average_gradients,
    barrier,
    broadcast_buffers,
    check_world_fits,
    close_world,
    data_parallel,
    gather_objects,
    init_world,
    sync_batchnorm,
)
from mmseg_heads.engine.evaluator import evaluate_model, to_device
from mmseg_heads.engine.inference import Inference
from mmseg_heads.engine.loaders import eval_loader, train_dataset, train_loader
from mmseg_heads.engine.optim import build_optimizer, build_scheduler, optimizer_step
from mmseg_heads.engine.precision import check_precision, grad_scaler, resolve_precision
from mmseg_heads.engine.resume import (
    misfit_error,
    own_rng_state,
    resolve_resume,
    restore_states,
    rng_states,
    set_rng_states,
)
from mmseg_heads.engine.run import (
    RunCheckpoint,
    describe_run,
    loss_from_config,
    model_from_config,
    spec_hash,
)
from mmseg_heads.engine.run_dir import (
    MetricsLog,
    append_jsonl,
    check_checkpoint_space,
    prepare_run_dir,
    prune_checkpoints,
    selection_score,
    truncate_log,
    val_record,
    write_run_config,
)
from mmseg_heads.engine.steps import EpochLosses, batch_foreground_counts, forward_loss, learns
from mmseg_heads.engine.tensorboard import log_epoch, open_writer, writer_class
from mmseg_heads.engine.threads import configure_threads
from mmseg_heads.metrics.confusion import ConfusionMatrix
from mmseg_heads.metrics.diagnostics import BatchDiagnostics

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

    def __init__(
        self,
        config: Config,
        *,
        progress: bool = True,
        resume: Path | None = None,
        changes: dict | None = None,
    ):
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
        state = RunCheckpoint.load(resume / "checkpoints" / "last.pt") if resume else None
        self.threads = self._configure_threads(state)
        self.precision = resolve_precision(train_cfg["precision"], self.device)
        check_precision(self.precision, self.device, file=str(config.path), field="train.precision")
        # Processes differ in augmentation and dropout draws; DDP gives all rank 0's weights.
        seed_everything(train_cfg["seed"] + self.world.rank)
        self.dataset = train_dataset(config.spec, train_cfg)
        check_world_fits(len(self.dataset), self.world, file=config.path)
        # Weight-file problems surface here, before any file of the run is written.
        self.model = model_from_config(config).to(self.device, memory_format=torch.channels_last)
        if train_cfg["sync_batchnorm"]:
            self.model = sync_batchnorm(self.model, self.world, file=config.path)
        # A window the network cannot tile fails now, not at the first validation.
        self.inference = Inference.from_eval(config.eval, config.spec.nesting())
        self.inference.check(self.model.trunk.max_stride, file=config.path)
        self.criterion = loss_from_config(config).to(self.device)
        self.batch = self._resolve_batch_size(state)
        self.val_loader = eval_loader(
            config.spec, config.eval["split"], self.batch, train_cfg["workers"], self.world
        )
        # train.compile: training steps through torch.compile (wrapping DDP, as PyTorch
        # recommends). Checkpoints and validation use self.model, the eager module itself, so
        # their keys and results do not depend on the option.
        trained = data_parallel(self.model, self.world)
        self.trained = torch.compile(trained) if train_cfg["compile"] else trained
        self.optimizer = build_optimizer(self.model, self.criterion, train_cfg)
        self.scaler = grad_scaler(self.precision, self.device)
        self.plan = self._plan_steps()
        self.scheduler = build_scheduler(self.optimizer, train_cfg, self.plan)
        self.diagnostics = BatchDiagnostics()
        self.epoch = 0
        self.saved_epoch = 0  # the epoch last.pt holds
        self.step = 0
        self.best = -1.0
        # A missing TensorBoard stops the run before any file of it is written.
        tensorboard = writer_class(
            train_cfg["tensorboard"] and self.world.is_main, file=str(config.path)
        )
        check_checkpoint_space(
            config,
            resume or config.run_dir(),
            [self.model, self.criterion],
            done=state.epoch if state else 0,
            epochs=len(self.plan),
        )
        if resume is None:
            self.run_dir = prepare_run_dir(config, self.world)
        else:
            self.run_dir = resume
            self._resume(state, changes or {})
        self.writer = open_writer(tensorboard, self.run_dir, self.epoch)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl") if self.world.is_main else None
        log.info(
            "run directory %s; precision %s on %s; batch size %d%s",
            self.run_dir, self.precision, self.device, self.batch,
            f" per process × {self.world.size} processes" if self.world.distributed else "",
        )  # fmt: skip

    # --- set-up ------------------------------------------------------------------------------
    def _configure_threads(self, state: RunCheckpoint | None) -> int:
        """torch's CPU threads: ``train.threads``, or with ``auto`` the cores free now; a resumed
        run keeps the count it started with (gradients differ in their last bits between thread
        counts, and a resume must reproduce the uninterrupted run)."""
        setting = self.config.train["threads"]
        if setting == "auto" and state is not None and state.threads is not None:
            torch.set_num_threads(state.threads)
            log.info("threads: %d, as chosen when this run started", state.threads)
            return state.threads
        threads, why = configure_threads(setting)
        log.info("threads: %d (%s)", threads, why)
        return threads

    def _resolve_batch_size(self, state: RunCheckpoint | None) -> int:
        """``train.batch_size``, measured on this machine when it is ``auto`` (and printed)."""
        requested = self.config.train["batch_size"]
        if requested != "auto":
            return requested
        if state is not None and state.batch_size is not None:
            log.info("batch_size auto: %d, as chosen when this run started", state.batch_size)
            return state.batch_size
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

    def _plan_steps(self) -> list[int]:
        """Optimizer steps of each epoch: ``train.epochs`` whole epochs, or as many as
        ``train.steps`` needs, the last one cut short."""
        budget = self.config.train["steps"]
        if budget is None:
            return [self._steps_in(e) for e in range(1, self.config.train["epochs"] + 1)]
        plan: list[int] = []
        while sum(plan) < budget:
            plan.append(min(self._steps_in(len(plan) + 1), budget - sum(plan)))
        return plan

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
        # train.steps: the step at which the budget ends inside this epoch (None: the whole epoch)
        stop_at = sum(self.plan[: self.epoch]) if self.config.train["steps"] else None
        losses = EpochLosses()
        batches = []
        bar = tqdm(
            loader, desc=f"epoch {self.epoch}", disable=None if self.progress else True, leave=False
        )
        self.optimizer.zero_grad(set_to_none=True)
        # Piped to a log file tqdm draws nothing (no carriage-return junk): a line now and then.
        noted = time.monotonic() if self.progress and not sys.stderr.isatty() else None
        for index, batch in enumerate(bar):
            batch = to_device(batch, self.device)
            boundary = (index + 1) % accumulate == 0 or index + 1 == len(loader)
            with self._gradient_sync(boundary):
                logits, loss, parts = self._forward_backward(batch, accumulate)
            if boundary:
                self._optimizer_step()
            record = self._diagnose(logits, batch)
            batches.append(record)
            if self.metrics is not None:
                self.metrics.add(record)  # reaches metrics.jsonl within seconds, not at epoch end
            losses.add(loss, parts)
            bar.set_postfix(losses.postfix())
            if noted is not None and time.monotonic() - noted >= PROGRESS_LINE_SECONDS:
                noted = time.monotonic()
                log.info("epoch %d: batch %d/%d", self.epoch, index + 1, len(loader))
            if stop_at is not None and boundary and self.step >= stop_at:
                break
        total = losses.summed(self.world)
        record = total.means()
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["frozen_encoders"] = self.frozen(self.epoch)
        if total.skipped:
            record["skipped_batches"] = total.skipped
        return record, batches

    def _forward_backward(self, batch: dict, accumulate: int) -> tuple[dict, torch.Tensor, dict]:
        logits, loss, parts = forward_loss(
            self.trained, self.criterion, batch, precision=self.precision, device=self.device
        )
        for task in parts["nonfinite"]:
            log.warning(
                "step %d: task %r has a non-finite loss; left out of this step", self.step, task
            )
        if learns(logits, parts):
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

    def _optimizer_step(self) -> None:
        average_gradients(self.criterion, self.world)  # outside DDP: learned task weights
        optimizer_step(
            self.optimizer,
            self.scaler,
            grad_clip=self.config.train["grad_clip"],
            parameters=self.model.parameters(),
        )
        self.scheduler.step()
        self.step += 1

    def _diagnose(self, logits: dict[str, torch.Tensor], batch: dict) -> dict:
        """Per-task foreground TP/FP/FN of this training batch; warns on collapse.

        Under torchrun these are rank 0's batches (gathering them would sync every step).
        """
        tasks = batch_foreground_counts(logits, batch, self.config.spec)
        for task, counts in tasks.items():
            for warning in self.diagnostics.update(task, counts):
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
            progress=self.progress,
            inference=self.inference,
        )
        return {task: matrix.all_reduce() for task, matrix in matrices.items()}

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, summaries: dict, rng_per_rank: list[dict]) -> RunCheckpoint:
        return RunCheckpoint(
            model=self.model.state_dict(),
            loss=self.criterion.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            epoch=self.epoch,
            step=self.step,
            best=self.best,
            batch_size=self.batch,
            threads=self.threads,
            world_size=self.world.size,
            rng=rng_per_rank[0],
            rng_per_rank=rng_per_rank,
            val={task: s["macro_foreground_f"] for task, s in summaries.items()},
            **describe_run(self.config),
        )

    def _resume(self, state: RunCheckpoint, changes: dict) -> None:
        checkpoint = self.run_dir / "checkpoints" / "last.pt"
        # The new config's learning rates and weight decay, before the run's states replace them.
        fresh = [dict(g) for g in self.optimizer.param_groups]
        restore_states(
            state,
            model=self.model,
            loss=self.criterion,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            misfit=partial(misfit_error, self.run_dir, self.config.path, checkpoint),
        )
        self.epoch, self.step, self.best = state.epoch, state.step, state.best
        self.saved_epoch = state.epoch
        set_rng_states(own_rng_state(state, self.world))
        if state.data_spec_sha256 != spec_hash(self.config.spec.path):
            log.warning("the data spec changed since this run started (%s)", self.config.spec.path)
        if self.world.is_main:
            truncate_log(self.run_dir / "metrics.jsonl", self.epoch)
        if changes:  # after the truncation: its `resume` line belongs to the log from here on
            self._apply_changes(changes, fresh)
        barrier(self.world)
        log.info("resuming %s after epoch %d (step %d)", self.run_dir, self.epoch, self.step)

    def _apply_changes(self, changes: dict, fresh: list[dict]) -> None:
        """``--resume-with-changes``: the optimizer and schedule follow the new config (its
        learning rates and weight decay, the schedule over its epochs or steps, at the step the
        run reached); the run's config.yaml and metrics.jsonl say what changed."""
        for key, (before, after) in changes.items():
            log.warning("resuming with a change: %s %r -> %r", key, before, after)
        self.scheduler.base_lrs = [g["initial_lr"] for g in fresh]
        factors = [fn(self.scheduler.last_epoch) for fn in self.scheduler.lr_lambdas]
        for group, new, factor in zip(self.optimizer.param_groups, fresh, factors, strict=True):
            group["initial_lr"], group["weight_decay"] = new["initial_lr"], new["weight_decay"]
            group["lr"] = new["initial_lr"] * factor
        if self.world.is_main:
            write_run_config(self.config, self.run_dir)
            append_jsonl(
                self.run_dir / "metrics.jsonl",
                [{"epoch": self.epoch, "step": self.step, "split": "resume", "changes": {
                    k: {"run": a, "now": b} for k, (a, b) in changes.items()}}],
            )  # fmt: skip

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
        try:
            state.save(*(folder / name for name in names))
        except DeferredInterrupt:  # Ctrl-C came during the write, which finished first
            self.saved_epoch = self.epoch
            raise
        self.saved_epoch = self.epoch
        prune_checkpoints(folder, self.config.train["keep_checkpoints"])

    # --- the run -----------------------------------------------------------------------------
    def fit(self) -> Path:
        try:
            return self._fit()
        except KeyboardInterrupt:
            # What last.pt holds: Ctrl-C during the checkpoint write waits for it to finish.
            done = self.saved_epoch
            if done >= 1:
                log.warning(
                    "interrupted in epoch %d: %s holds epoch %d; continue with "
                    "`mmseg-heads train --resume %s`",
                    self.epoch, self.run_dir / "checkpoints" / "last.pt", done, self.run_dir,
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
        epochs = len(self.plan)
        if self.epoch >= epochs:
            budget = self.config.train["steps"]
            what = f"train.steps {budget}" if budget else f"train.epochs {epochs}"
            log.warning(
                "nothing left to train: %s already holds epoch %d (step %d) of %s; to train on, "
                "raise it: `mmseg-heads train --resume %s --resume-with-changes %s=…`",
                self.run_dir / "checkpoints" / "last.pt", self.epoch, self.step, what,
                self.run_dir, what.split()[0],
            )  # fmt: skip
        durations: list[float] = []
        while self.epoch < epochs:
            self.epoch += 1
            started = time.perf_counter()
            train_record, _ = self.train_epoch()
            matrices = self.validate()
            summaries = {t: m.summary(eval_cfg["beta"]) for t, m in matrices.items()}
            score = selection_score(summaries, eval_cfg["select_by"])
            improved = score > self.best
            self.best = max(self.best, score)
            seconds = time.perf_counter() - started
            validation = val_record(self.epoch, eval_cfg, score, summaries, matrices)
            if self.metrics is not None:
                self.metrics.add(
                    {"epoch": self.epoch, "split": "train", **train_record, "seconds": seconds},
                    validation,
                )
                self.metrics.flush()
                log_epoch(self.writer, self.epoch, train_record, validation)
            self._save(summaries, improved)
            f_text = ", ".join(
                f"{t} F {s['macro_foreground_f'] or 0:.3f}" for t, s in summaries.items()
            )
            durations.append(seconds)
            log.info(
                "epoch %d/%d: loss %.4f; %s; lr %.3g; %.1f s%s%s",
                self.epoch, epochs, train_record["loss"], f_text, train_record["lr"], seconds,
                remaining_text(durations, epochs - self.epoch),
                " (best so far)" if improved else "",
            )  # fmt: skip
        return self.run_dir


#: Without a terminal, ``train`` logs how far an epoch is at most this often.
PROGRESS_LINE_SECONDS = 60.0


def remaining_text(durations: list[float], epochs_left: int) -> str:
    """``; about 12 min left``: the median epoch so far times the epochs left (none at the end)."""
    if not epochs_left or not durations:
        return ""
    seconds = statistics.median(durations) * epochs_left
    if seconds < 90:
        return f"; about {seconds:.0f} s left"
    if seconds < 5400:
        return f"; about {seconds / 60:.0f} min left"
    return f"; about {seconds / 3600:.1f} h left"


def train(
    config: Config,
    *,
    progress: bool = True,
    resume: str | Path | None = None,
    changes: dict | None = None,
) -> Path:
    """Train the model a config describes; returns the run directory.

    ``resume``: ``"auto"`` (the config's run directory) or a run directory to continue;
    ``changes``: ``{key: (the run's value, config's value)}`` applied on resume (see
    ``train --resume-with-changes``).
    """
    trainer = Trainer(
        config, progress=progress, resume=resolve_resume(config, resume), changes=changes
    )
    try:
        return trainer.fit()
    finally:
        trainer.close()
