"""A run's timeline in optimizer steps: how many each epoch takes, and after which steps the run
validates and writes its numbered checkpoints.

- The budget: ``train.epochs`` whole epochs, or ``train.steps`` optimizer steps (as many epochs
  as they need, the last one cut short).
- Validation: at the end of every epoch; with ``train.val_every: N``, every ``N`` optimizer steps
  of the run (counted from its first step, so a resumed run validates on the same steps) and once
  at its end (MMSegmentation's ``val_interval``).
- Numbered checkpoints (``train.checkpoint_every: N``, 0: none): ``epoch_<N>.pt`` every ``N``
  epochs; with a ``train.steps`` budget, ``step_<N>.pt`` every ``N`` optimizer steps.

``last.pt``, the point a run resumes from, is written at the end of every epoch and with every
save inside one (a ``step_<N>.pt``, or a ``best.pt`` of ``val_every``): a run stopped inside a
long epoch resumes at the batch after that save, as if never stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmseg_heads.engine.run_dir import numbered_kind, numbered_name


def plan_steps(steps_in: Callable[[int], int], *, epochs: int, budget: int | None) -> list[int]:
    """Optimizer steps of each epoch (``steps_in(epoch)``: a whole epoch's, epochs from 1):
    ``epochs`` whole epochs, or as many as ``budget`` steps need, the last one cut short."""
    if budget is None:
        return [steps_in(epoch) for epoch in range(1, epochs + 1)]
    plan: list[int] = []
    while sum(plan) < budget:
        plan.append(min(steps_in(len(plan) + 1), budget - sum(plan)))
    return plan


def steps_in_epoch(samples: int, batch_size: int, accumulate: int) -> int:
    """Optimizer steps of a whole epoch over ``samples`` (one process's shard): its batches
    (the last incomplete one dropped, unless it is the only one) per ``accumulate``."""
    batches = samples // batch_size if samples > batch_size else 1
    return max(1, -(-batches // accumulate))


@dataclass(frozen=True)
class Intervals:
    """When one run validates and writes numbered checkpoints (see :meth:`from_train`).

    Attributes:
        val_every: validate every this many optimizer steps (``None``: every epoch).
        checkpoint_every: a numbered checkpoint every this many epochs or steps (0: none).
        kind: what ``checkpoint_every`` counts, ``epoch`` or ``step`` (a ``train.steps`` budget).
    """

    val_every: int | None = None
    checkpoint_every: int = 0
    kind: str = "epoch"

    @classmethod
    def from_train(cls, train_cfg: dict) -> Intervals:
        return cls(train_cfg["val_every"], train_cfg["checkpoint_every"], numbered_kind(train_cfg))

    def validates(self, step: int, *, epoch_end: bool = False, final: bool = False) -> bool:
        """Whether to validate after optimizer step ``step`` (of the whole run); ``epoch_end``:
        it ended an epoch, ``final``: the run."""
        if self.val_every is None:
            return epoch_end
        return step % self.val_every == 0 or final

    def numbered(self, epoch: int, step: int, *, epoch_end: bool = False) -> str | None:
        """The numbered checkpoint due after ``step`` (in ``epoch``), or ``None``."""
        every = self.checkpoint_every
        if not every:
            return None
        if self.kind == "step":
            return numbered_name("step", step) if step % every == 0 else None
        return numbered_name("epoch", epoch) if epoch_end and epoch % every == 0 else None

    def checkpoint_names(
        self, epoch: int, step: int, *, improved: bool, epoch_end: bool
    ) -> list[str]:
        """The names a save after ``step`` writes (one file, hard links): the numbered one due,
        ``best.pt`` when validation ``improved``, and ``last.pt`` at an ``epoch_end`` or with any
        of those (last, so that resume never starts before best exists); none: nothing to save."""
        names = [self.numbered(epoch, step, epoch_end=epoch_end), "best.pt" if improved else None]
        names = [name for name in names if name]
        return names + ["last.pt"] if names or epoch_end else []
