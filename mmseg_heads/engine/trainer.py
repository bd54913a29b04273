"""Training: reads top to bottom, one epoch = train steps, validation, checkpoints, a log line."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from mmseg_heads.config import Config, task_loss_terms
from mmseg_heads.data.spec import IGNORE_INDEX
from mmseg_heads.engine.checkpoint import save_checkpoint
from mmseg_heads.engine.evaluator import evaluate_model, to_device
from mmseg_heads.engine.loaders import eval_loader, train_loader
from mmseg_heads.engine.precision import autocast, resolve_precision
from mmseg_heads.errors import UserError
from mmseg_heads.losses.multitask import MultiTaskLoss
from mmseg_heads.losses.task_loss import TaskLoss
from mmseg_heads.models.build import build_model
from mmseg_heads.models.model import MultiTaskSegmenter

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_from_config(config: Config) -> MultiTaskSegmenter:
    return build_model(
        config.model,
        modalities={m.name: m.channels for m in config.spec.modalities.values()},
        tasks={t.name: t.num_classes for t in config.spec.tasks.values()},
    )


def loss_from_config(config: Config) -> MultiTaskLoss:
    tasks = {
        task: TaskLoss(task_loss_terms(config.loss, task), ignore_index=IGNORE_INDEX)
        for task in config.spec.tasks
    }
    return MultiTaskLoss(tasks, config.loss["task_weights"])


def cosine_lr(step: int, total: int) -> float:
    """LR multiplier: cosine from 1 to 0 over ``total`` steps."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def selection_score(summaries: dict[str, dict], select_by: str) -> float:
    """The number ``best.pt`` is chosen by: a task's macro foreground F, or their mean."""
    if select_by != "mean_foreground_f":
        return summaries[select_by]["macro_foreground_f"] or 0.0
    values = [
        s["macro_foreground_f"] for s in summaries.values() if s["macro_foreground_f"] is not None
    ]
    return sum(values) / len(values) if values else 0.0


def prepare_run_dir(config: Config) -> Path:
    """Create the run directory; one that already holds a run is never overwritten."""
    run_dir = config.run_dir()
    if (run_dir / "checkpoints").exists() or (run_dir / "metrics.jsonl").exists():
        raise UserError(
            f"run directory {run_dir} already holds a run; set another `train.out` (e.g. train.out={run_dir}_2) "
            "or move it away",
            file=config.path,
            field="train.out",
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create run directory {run_dir}: {exc}", file=config.path, field="train.out"
        ) from exc
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({**config.raw, "data": str(config.spec.path.resolve())}, sort_keys=False)
    )
    shutil.copyfile(config.spec.path, run_dir / "data_spec.yaml")
    return run_dir


def checkpoint_state(config: Config, model: torch.nn.Module, epoch: int, summaries: dict) -> dict:
    spec = config.spec
    return {
        "model": model.state_dict(),
        "config": config.raw,
        "config_path": str(config.path.resolve()),
        "data_spec": spec.raw,
        "data_spec_path": str(spec.path.resolve()),
        "data_root": str(spec.root.resolve()),
        "classes": {t.name: list(t.classes) for t in spec.tasks.values()},
        "epoch": epoch,
        "val": {task: s["macro_foreground_f"] for task, s in summaries.items()},
    }


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def train(config: Config, *, progress: bool = True) -> Path:
    """Train the model a config describes; returns the run directory."""
    train_cfg, eval_cfg = config.train, config.eval
    seed_everything(train_cfg["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(train_cfg["precision"], device)
    loader = train_loader(config.spec, train_cfg)
    val_loader = eval_loader(
        config.spec, eval_cfg["split"], train_cfg["batch_size"], train_cfg["workers"]
    )
    model = model_from_config(config).to(
        device
    )  # weights problems surface before any file is written
    run_dir = prepare_run_dir(config)
    log.info("run directory %s; precision %s on %s", run_dir, precision, device)

    criterion = loss_from_config(config).to(device)
    optimizer = _optimizer(model, train_cfg)
    total_steps = train_cfg["epochs"] * len(loader)
    schedule = (
        (lambda s: cosine_lr(s, total_steps))
        if train_cfg["schedule"] == "cosine"
        else (lambda s: 1.0)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    metrics_log = run_dir / "metrics.jsonl"
    best = -1.0
    for epoch in range(1, train_cfg["epochs"] + 1):
        started = time.perf_counter()
        train_record = _train_epoch(
            model, criterion, optimizer, scheduler, loader, device, precision, epoch, progress
        )
        summaries = {
            task: matrix.summary(eval_cfg["beta"])
            for task, matrix in evaluate_model(
                model, val_loader, config.spec, device=device, precision=precision
            ).items()
        }
        score = selection_score(summaries, eval_cfg["select_by"])
        _append_jsonl(
            metrics_log,
            {
                "epoch": epoch,
                "split": "train",
                **train_record,
                "seconds": time.perf_counter() - started,
            },
        )
        _append_jsonl(
            metrics_log,
            {
                "epoch": epoch,
                "split": eval_cfg["split"],
                "select_by": eval_cfg["select_by"],
                "score": score,
                "tasks": {
                    t: {
                        k: s[k]
                        for k in ("macro_foreground_f", "macro_f", "micro_f", "pixel_accuracy")
                    }
                    | {"f": {c: v["f"] for c, v in s["per_class"].items()}}
                    for t, s in summaries.items()
                },
            },
        )
        state = checkpoint_state(config, model, epoch, summaries)
        save_checkpoint(state, run_dir / "checkpoints" / "last.pt")
        if score > best:
            best = score
            save_checkpoint(state, run_dir / "checkpoints" / "best.pt")
        f_text = ", ".join(
            f"{t} F {s['macro_foreground_f'] or 0:.3f}" for t, s in summaries.items()
        )
        log.info(
            "epoch %d/%d: loss %.4f; %s", epoch, train_cfg["epochs"], train_record["loss"], f_text
        )
    return run_dir


def _optimizer(model: torch.nn.Module, train_cfg: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = train_cfg["lr"], train_cfg["weight_decay"]
    if train_cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if train_cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _train_epoch(
    model, criterion, optimizer, scheduler, loader, device, precision, epoch, progress
) -> dict:
    model.train()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=None if progress else True, leave=False)
    for batch in bar:
        batch = to_device(batch, device)
        with autocast(precision, device):
            logits = model(batch["images"])
        loss, parts = criterion(
            {k: v.float() for k, v in logits.items()}, batch["labels"], batch["has_label"]
        )
        for task in parts["nonfinite"]:
            log.warning(
                "epoch %d: task %r has a non-finite loss; it is left out of this step", epoch, task
            )
        for task in parts["skipped"]:
            skipped[task] = skipped.get(task, 0) + 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        for name, value in {
            "loss": loss.detach(),
            **{k: v for k, v in parts.items() if torch.is_tensor(v)},
        }.items():
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
        bar.set_postfix({k: f"{sums[k] / counts[k]:.3f}" for k in sums if "/" not in k})
    record = {k: sums[k] / counts[k] for k in sums}
    record["lr"] = scheduler.get_last_lr()[0]
    if skipped:
        record["skipped_batches"] = skipped
    return record
