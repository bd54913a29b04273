"""Validation during training: the confusion matrices of ``eval.split`` (summed over processes),
the score ``best.pt`` follows (``eval.select_by``) and the validation line of ``metrics.jsonl``."""

from __future__ import annotations

import torch

from mmseg_heads.config import Config
from mmseg_heads.engine.distributed import World, broadcast_buffers
from mmseg_heads.engine.evaluator import evaluate_model
from mmseg_heads.engine.inference import Inference
from mmseg_heads.engine.loaders import eval_loader
from mmseg_heads.metrics.confusion import ConfusionMatrix


class Validator:
    """Validates a training model on ``eval.split`` (each process its shard) with ``eval``'s
    inference, and keeps score.

    Attributes:
        best: the best ``eval.select_by`` score so far (-1 before any validation).
        val: ``{task: macro foreground F}`` of the latest validation (``None`` before one).
    """

    def __init__(
        self,
        config: Config,
        model: torch.nn.Module,
        inference: Inference,
        *,
        batch_size: int,
        world: World,
        device: torch.device,
        precision: str,
        progress: bool,
    ) -> None:
        """``inference``: ``eval``'s, checked against the model (see ``Inference.check``)."""
        self.config, self.model, self.inference = config, model, inference
        workers = config.train["workers"]
        self.loader = eval_loader(config.spec, config.eval["split"], batch_size, workers, world)
        self.world, self.device, self.precision, self.progress = world, device, precision, progress
        self.best = -1.0
        self.val: dict[str, float | None] | None = None

    def matrices(self) -> dict[str, ConfusionMatrix]:
        """Confusion matrices of the validation split, summed over every process's shard."""
        broadcast_buffers(self.model, self.world)  # evaluate rank 0's BatchNorm statistics
        matrices = evaluate_model(
            self.model,
            self.loader,
            self.config.spec,
            device=self.device,
            precision=self.precision,
            progress=self.progress,
            inference=self.inference,
        )
        return {task: matrix.all_reduce() for task, matrix in matrices.items()}

    def __call__(self, epoch: int, step: int) -> tuple[dict, bool]:
        """Validate now (the model is left in eval mode): ``(the validation line, whether the
        score improved on the best so far)``."""
        eval_cfg = self.config.eval
        matrices = self.matrices()
        summaries = {t: m.summary(eval_cfg["beta"]) for t, m in matrices.items()}
        score = selection_score(summaries, eval_cfg["select_by"])
        improved = score > self.best
        self.best = max(self.best, score)
        self.val = {task: s["macro_foreground_f"] for task, s in summaries.items()}
        return val_record(epoch, eval_cfg, score, summaries, matrices, step=step), improved


def selection_score(summaries: dict[str, dict], select_by: str) -> float:
    """The number ``best.pt`` is chosen by: a task's macro foreground F, or their mean."""
    if select_by != "mean_foreground_f":
        return summaries[select_by]["macro_foreground_f"] or 0.0
    values = [
        s["macro_foreground_f"] for s in summaries.values() if s["macro_foreground_f"] is not None
    ]
    return sum(values) / len(values) if values else 0.0


def val_record(
    epoch: int,
    eval_cfg: dict,
    score: float,
    summaries: dict,
    matrices: dict[str, ConfusionMatrix],
    *,
    step: int,
) -> dict:
    """A validation line: the epoch it fell in and the optimizer steps taken, headline scores,
    F per class and the confusion matrices."""
    headline = ("macro_foreground_f", "macro_f", "micro_f", "pixel_accuracy")
    return {
        "epoch": epoch,
        "step": step,
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
