"""Training: reads top to bottom, one epoch = train steps, validation, checkpoints, a log line.

The pieces live beside it: the step (``steps``), optimizer and schedule (``optim``), the steps of
each epoch and when validation and numbered checkpoints come (``timeline``), validation
(``validation``), the run directory and ``metrics.jsonl`` (``run_dir``), resuming (``resume``),
the checkpoint (``run``), the log lines (``progress``).
"""

from __future__ import annotations

import logging
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmseg_heads.atomic import interrupts_deferred
from mmseg_heads.config import Config
from mmseg_heads.engine.batch_size import Shapes, run_batch_size
from mmseg_heads.engine.compile_mode import choose_compile, step_timer
from mmseg_heads.engine.distributed import (
    check_world_fits,
    close_world,
    data_parallel,
    gather_objects,
    init_world,
    sync_batchnorm,
)
from mmseg_heads.engine.evaluator import to_device
from mmseg_heads.engine.inference import Inference
from mmseg_heads.engine.loaders import augment_batch, batch_seed, train_dataset, train_loader
from mmseg_heads.engine.optim import build_optimizer, build_scheduler
from mmseg_heads.engine.precision import check_precision, grad_scaler, resolve_precision
from mmseg_heads.engine.progress import (
    BatchLines,
    epoch_text,
    interrupted_text,
    nothing_left_text,
    remaining_text,
    validation_text,
)
from mmseg_heads.engine.resume import (
    apply_changes,
    misfit_error,
    own_rng_state,
    reopen_run,
    resolve_resume,
    restore_states,
    rng_states,
    set_rng_states,
)
from mmseg_heads.engine.run import RunCheckpoint, describe_run, loss_from_config, model_from_config
from mmseg_heads.engine.run_dir import (
    MetricsLog,
    check_checkpoint_space,
    prepare_run_dir,
    prune_checkpoints,
)
from mmseg_heads.engine.step_log import (
    EpochLosses,
    StepLog,
    log_every,
    means_of,
    row_warnings,
)
from mmseg_heads.engine.steps import Stepper, batch_foreground_counts
from mmseg_heads.engine.tensorboard import log_epoch, open_writer, writer_class
from mmseg_heads.engine.threads import training_threads
from mmseg_heads.engine.timeline import Intervals, plan_steps, steps_in_epoch
from mmseg_heads.engine.validation import Validator
from mmseg_heads.metrics.diagnostics import BatchDiagnostics

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Owns one run: model, loss, optimizer, schedule, loaders, run directory and logs.

    ``fit()`` runs every epoch: training steps, validation (each epoch, or every
    ``train.val_every`` steps), ``metrics.jsonl`` lines, checkpoints (``last.pt`` every epoch,
    ``best.pt`` when ``eval.select_by`` improves, ``epoch_<N>.pt`` or ``step_<N>.pt`` every
    ``train.checkpoint_every`` epochs or steps: see ``timeline``). ``resume`` continues a run
    from its ``last.pt`` and reproduces the uninterrupted run exactly on the CPU.

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
        self.threads = training_threads(train_cfg["threads"], state.threads if state else None)
        self.precision = resolve_precision(train_cfg["precision"], self.device)
        check_precision(self.precision, self.device, file=str(config.path), field="train.precision")
        # Processes differ in augmentation and dropout draws; DDP gives all rank 0's weights.
        seed_everything(train_cfg["seed"] + self.world.rank)
        self.dataset = train_dataset(config.spec, train_cfg)
        # train.augment_on: gpu — the loader cuts windows, the device augments whole batches
        self.batch_augment = self.dataset.transform.batch_augment()
        log.info("augmentation: %s", self.dataset.transform.describe())
        check_world_fits(len(self.dataset), self.world, file=config.path)
        # Weight-file problems surface here, before any file of the run is written.
        self.model = model_from_config(config).to(self.device, memory_format=torch.channels_last)
        if train_cfg["sync_batchnorm"]:
            self.model = sync_batchnorm(self.model, self.world, file=config.path)
        # A window the network cannot tile fails now, not at the first validation.
        inference = Inference.from_eval(config.eval, config.spec.nesting())
        inference.check(self.model.trunk.max_stride, file=config.path)
        self.criterion = loss_from_config(config).to(self.device)
        shapes = Shapes.from_spec(config.spec, train_cfg["crop"])
        self.batch = run_batch_size(
            train_cfg["batch_size"], state.batch_size if state else None, self.model, shapes,
            device=self.device, precision=self.precision, samples=len(self.dataset),
            world=self.world,
        )  # fmt: skip
        self.validator = Validator(
            config, self.model, inference, batch_size=self.batch, world=self.world,
            device=self.device, precision=self.precision, progress=self.progress,
        )  # fmt: skip
        # train.compile: training steps through torch.compile (wrapping DDP, as PyTorch
        # recommends). Checkpoints and validation use self.model, the eager module itself, so
        # their keys and results do not depend on the option.
        self.compiled = choose_compile(
            train_cfg["compile"], self.device,
            step_timer(self.model, shapes, self.batch, self.device, self.precision), self.world,
        )  # fmt: skip
        log.info("torch.compile: %s", self.compiled.text())
        self.trained = self.compiled.wrap(data_parallel(self.model, self.world))
        self.optimizer = build_optimizer(self.model, self.criterion, train_cfg)
        self.scaler = grad_scaler(self.precision, self.device)
        self.plan = plan_steps(
            self._steps_in, epochs=train_cfg["epochs"], budget=train_cfg["steps"]
        )
        self.scheduler = build_scheduler(self.optimizer, train_cfg, self.plan)
        self.stepper = Stepper(
            self.trained, self.model, self.criterion, self.optimizer, self.scheduler, self.scaler,
            world=self.world, precision=self.precision, device=self.device, train_cfg=train_cfg,
        )  # fmt: skip
        self.diagnostics = BatchDiagnostics()
        self.log_every = log_every(train_cfg["log_every"], self.device)
        self.intervals = Intervals.from_train(train_cfg)
        self.epoch = 0
        self.saved: tuple[int, int, int] | None = None  # last.pt's epoch, step, epoch_batches
        self.epoch_batches = 0  # batches of the epoch in progress trained (0: it is complete)
        self.resume_batches = 0  # batches of the first epoch trained before a resume
        self.resume_losses: dict | None = None  # and their loss sums
        self.validations: list[tuple[dict, bool]] = []  # this epoch's: (line, improved)
        # A missing TensorBoard stops the run before any file of it is written.
        tensorboard = writer_class(
            train_cfg["tensorboard"] and self.world.is_main, file=str(config.path)
        )
        done = (state.step if self.intervals.kind == "step" else state.epoch) if state else 0
        check_checkpoint_space(
            config, resume or config.run_dir(), [self.model, self.criterion], done=done or 0
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

    @property
    def step(self) -> int:
        """Optimizer steps the run has taken."""
        return self.stepper.step

    # --- epochs, phases and batches ------------------------------------------------------------
    def frozen(self, epoch: int) -> bool:
        return epoch <= self.config.train["freeze_encoders_epochs"]

    def batch_size(self, epoch: int) -> int:
        unfreeze = self.config.train["unfreeze_batch_size"]
        return self.batch if self.frozen(epoch) or unfreeze is None else unfreeze

    def _steps_in(self, epoch: int) -> int:
        samples = len(self.dataset) // self.world.size  # this process's shard of the epoch
        return steps_in_epoch(samples, self.batch_size(epoch), self.config.train["accumulate"])

    def _set_encoders_frozen(self, frozen: bool) -> None:
        """Frozen encoders keep their weights *and* BatchNorm statistics (eval mode)."""
        for encoder in self.model.trunk.encoders.values():
            encoder.requires_grad_(not frozen)
            encoder.train(not frozen)

    # --- one epoch ---------------------------------------------------------------------------
    def _train_mode(self) -> None:
        self.trained.train()
        self._set_encoders_frozen(self.frozen(self.epoch))

    def train_epoch(self) -> tuple[dict, list[dict]]:
        """Returns the epoch's mean losses and one diagnostics record per batch; what is due
        between its steps (``train.val_every``, ``step_<N>.pt``) happens on the way."""
        self._train_mode()
        # Resumed from inside this epoch: its first batches were trained before.
        skip, self.resume_batches = self.resume_batches, 0
        loader = train_loader(
            self.dataset, self.config.train, self.batch_size(self.epoch), self.epoch, self.world,
            skip_batches=skip,
        )  # fmt: skip
        batches = skip + len(loader)
        accumulate = self.config.train["accumulate"]
        self.optimizer.zero_grad(set_to_none=True)
        # train.steps: the step at which the budget ends inside this epoch (None: the whole epoch)
        stop_at = sum(self.plan[: self.epoch]) if self.config.train["steps"] else None
        # The sums of every process so far (a checkpoint holds them together): on rank 0 alone.
        restored = self.resume_losses if skip and self.world.is_main else None
        self.losses = EpochLosses.from_state(restored, self.device)
        self.step_log = StepLog(self.log_every)
        self.batches: list[dict] = []
        self.bar = tqdm(
            loader, desc=f"epoch {self.epoch}", disable=None if self.progress else True,
            leave=False, initial=skip, total=batches,
        )  # fmt: skip
        lines = BatchLines(self.progress)
        for index, batch in enumerate(self.bar, start=skip):
            batch = to_device(batch, self.device)
            if self.batch_augment is not None:
                seed = batch_seed(self.config.train["seed"], self.epoch, index, self.world.rank)
                batch = augment_batch(batch, self.batch_augment, seed)
            boundary = (index + 1) % accumulate == 0 or index + 1 == batches
            logits, loss, parts = self.stepper.micro_batch(batch, boundary)
            # Kept on the device; read every log_every batches (no wait for the GPU each step).
            self.losses.add(loss, parts)
            counts = batch_foreground_counts(logits, batch)
            self.step_log.add(
                self.epoch, self.step, counts, parts["nonfinite"], self.stepper.skipped
            )
            spent = stop_at is not None and boundary and self.step >= stop_at
            last = spent or index + 1 == batches
            if last or self.step_log.due():
                self._read_step_log()
            lines.batch(self.epoch, index, batches)
            if last:
                break  # the epoch's last step: fit() validates and saves after it
            if boundary:
                self.epoch_batches = index + 1
                self._between_steps()
        self.epoch_batches = 0
        summed = self.losses.state(self.world)  # every process's sums: one read, one gather
        record = means_of(summed)
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["frozen_encoders"] = self.frozen(self.epoch)
        if summed["skipped"]:
            record["skipped_batches"] = summed["skipped"]
        return record, self.batches

    def _read_step_log(self) -> None:
        """Read the step log back: its rows to metrics.jsonl, its warnings (non-finite losses,
        collapse) with the steps they happened at, the running means to the bar.

        Under torchrun these are rank 0's batches (gathering them would sync every step).
        """
        for row in self.step_log.read():
            for warning in row_warnings(row):
                log.warning("%s", warning)
            for task, counts in row["tasks"].items():
                for warning in self.diagnostics.update(task, counts):
                    log.warning("step %d: %s", row["step"], warning)
            self.batches.append(row)
            if self.metrics is not None:
                self.metrics.add(row)  # reaches metrics.jsonl within seconds, not at epoch end
        if not self.bar.disable:
            self.bar.set_postfix(self.losses.postfix())

    def _between_steps(self) -> None:
        """Inside an epoch, after an optimizer step: a validation every ``train.val_every``
        steps, and with ``train.steps`` a ``step_<N>.pt`` every ``checkpoint_every``; a save
        here updates ``last.pt`` too (a resume goes on from this batch)."""
        improved = False
        if self.intervals.validates(self.step):
            self._read_step_log()  # this step's row before the validation's, as it happened
            validation, improved = self._validate()
            if self.metrics is not None:
                self.metrics.add(validation)
                self.metrics.flush()
            self._train_mode()
        names = self.intervals.checkpoint_names(
            self.epoch, self.step, improved=improved, epoch_end=False
        )
        if names:
            self._read_step_log()  # every row up to this state on disk before it is saved
            if self.metrics is not None:
                self.metrics.flush()
            self._save(names)

    def _validate(self) -> tuple[dict, bool]:
        """Validate now: ``(the validation line, whether eval.select_by improved)``, also kept
        in ``validations`` for the epoch line."""
        validation, improved = self.validator(self.epoch, self.step)
        self.validations.append((validation, improved))
        if self.intervals.val_every is not None:
            log.info("%s", validation_text(validation, improved))
        return validation, improved

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint(
        self, rng_per_rank: list[dict], epoch_losses: dict | None = None
    ) -> RunCheckpoint:
        return RunCheckpoint(
            model=self.model.state_dict(),
            loss=self.criterion.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            epoch=self.epoch,
            step=self.step,
            epoch_batches=self.epoch_batches or None,
            epoch_losses=epoch_losses,
            best=self.validator.best,
            batch_size=self.batch,
            threads=self.threads,
            world_size=self.world.size,
            rng=rng_per_rank[0],
            rng_per_rank=rng_per_rank,
            val=self.validator.val,
            **describe_run(self.config),
        )

    def _resume(self, state: RunCheckpoint, changes: dict) -> None:
        # The new config's learning rates and weight decay, before the run's states replace them.
        fresh = [dict(g) for g in self.optimizer.param_groups]
        last = self.run_dir / "checkpoints" / "last.pt"
        restore_states(
            state, model=self.model, loss=self.criterion, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler,
            misfit=partial(misfit_error, self.run_dir, self.config.path, last),
        )  # fmt: skip
        self.epoch, self.stepper.step = state.epoch, state.step
        self.saved = (state.epoch, state.step, state.epoch_batches or 0)
        if state.epoch_batches:  # saved inside an epoch: fit() goes on with that epoch
            self.epoch, self.resume_batches = state.epoch - 1, state.epoch_batches
            self.resume_losses = state.epoch_losses
        self.validator.best, self.validator.val = state.best, state.val
        set_rng_states(own_rng_state(state, self.world))
        apply_changes(self.optimizer, self.scheduler, fresh, changes)
        reopen_run(self.config, self.run_dir, state, changes, self.world)
        where = f"epoch {state.epoch}" + (
            f", batch {state.epoch_batches}" if state.epoch_batches else ""
        )
        log.info("resuming %s after %s (step %d)", self.run_dir, where, self.step)

    def _save(self, names: list[str]) -> None:
        """This state under each of ``names`` in ``checkpoints/``: one file, the other names hard
        links to it (``last.pt``: the resume point; see ``timeline``)."""
        resume_point = "last.pt" in names
        rng_per_rank = gather_objects(rng_states(), self.world)  # a collective: every process
        # Inside an epoch, its loss sums so far, every process's together (a collective too).
        epoch_losses = self.losses.state(self.world) if self.epoch_batches else None
        if not self.world.is_main:
            return
        folder = self.run_dir / "checkpoints"
        # What last.pt holds is recorded inside the same Ctrl-C-deferred block as the write: a
        # Ctrl-C that lands just after the write can then never find last.pt newer than we say.
        with interrupts_deferred():
            self.checkpoint(rng_per_rank, epoch_losses).save(*(folder / name for name in names))
            if resume_point:
                self.saved = (self.epoch, self.step, self.epoch_batches)
        prune_checkpoints(folder, self.config.train["keep_checkpoints"], self.intervals.kind)

    # --- the run -----------------------------------------------------------------------------
    def fit(self) -> Path:
        try:
            return self._fit()
        except KeyboardInterrupt:
            # What last.pt holds: Ctrl-C during the checkpoint write waits for it to finish.
            log.warning("%s", interrupted_text(self.run_dir, self.epoch, self.saved))
            raise

    def close(self) -> None:
        """Flush TensorBoard and leave the process group (torchrun waits for every process)."""
        if self.writer is not None:
            self.writer.close()
        close_world(self.world)

    def _fit(self) -> Path:
        epochs = len(self.plan)
        if self.epoch >= epochs:
            log.warning(
                "%s",
                nothing_left_text(self.run_dir, self.epoch, self.step, self.config.train, epochs),
            )
        durations: list[float] = []
        while self.epoch < epochs:
            self.epoch += 1
            self.validations = []
            started = time.perf_counter()
            train_record, _ = self.train_epoch()
            validation, improved = None, False
            if self.intervals.validates(self.step, epoch_end=True, final=self.epoch == epochs):
                validation, improved = self._validate()
            seconds = time.perf_counter() - started
            train = {"epoch": self.epoch, "step": self.step, "split": "train", **train_record}
            if self.metrics is not None:
                self.metrics.add({**train, "seconds": seconds}, *filter(None, [validation]))
                self.metrics.flush()
                latest = self.validations[-1][0] if self.validations else None
                log_epoch(self.writer, self.epoch, train_record, latest)
            self._save(
                self.intervals.checkpoint_names(
                    self.epoch, self.step, improved=improved, epoch_end=True
                )
            )
            durations.append(seconds)
            log.info(
                "%s",
                epoch_text(
                    epochs, train, self.validations, seconds=seconds,
                    left=remaining_text(durations, epochs - self.epoch),
                    by_step=self.intervals.val_every is not None,
                ),
            )  # fmt: skip
        return self.run_dir


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
