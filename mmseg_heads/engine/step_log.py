"""What each training step leaves for the log, kept on the device and read back in one go.

A value read back from a GPU (``float(loss)``, ``int(tp)``) waits for every queued kernel: one
such read per step turns a GPU run into a stop-and-go of launch and wait. The trainer instead
adds each step's loss parts (:class:`EpochLosses`) and foreground TP/FP/FN and non-finite flags
(:class:`StepLog`) as device tensors and reads them every ``train.log_every`` batches, before a
validation or checkpoint, and at an epoch's end. Warnings keep their step numbers; they arrive
up to ``log_every`` batches late.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mmseg_heads.engine.distributed import World, summed_over_processes

#: ``train.log_every`` when the config leaves it out: on a CPU reading costs no wait (every batch,
#: so rows reach metrics.jsonl as they happen); on a GPU at least every 50 batches.
DEFAULT_LOG_EVERY = {"cpu": 1, "cuda": 50}


def log_every(configured: int | None, device: torch.device) -> int:
    """Batches between reads of the step log."""
    return configured or DEFAULT_LOG_EVERY.get(device.type, 50)


@dataclass
class _Step:
    epoch: int
    step: int
    counts: dict[str, torch.Tensor]  # task -> [TP, FP, FN]
    nonfinite: dict[str, torch.Tensor]  # task -> 0-d bool
    skipped: torch.Tensor | None  # the optimizer step was skipped (non-finite gradients)


class StepLog:
    """Each batch's ``train_batch`` row (foreground TP/FP/FN per task) and its non-finite tasks,
    held as device tensors until :meth:`read`."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.pending: list[_Step] = []

    def add(
        self,
        epoch: int,
        step: int,
        counts: dict[str, torch.Tensor],
        nonfinite: dict[str, torch.Tensor],
        skipped: torch.Tensor | None = None,
    ) -> None:
        self.pending.append(_Step(epoch, step, counts, nonfinite, skipped))

    def due(self) -> bool:
        return len(self.pending) >= self.every

    def read(self) -> list[dict]:
        """The pending rows, oldest first, with one read-back for all of them; a row whose step
        had non-finite tasks lists them under ``"nonfinite"``, and one whose optimizer step was
        skipped says ``"skipped_step": true``."""
        pending, self.pending = self.pending, []
        if not pending:
            return []
        flat = [
            t.reshape(-1).long()
            for p in pending
            for t in (*p.counts.values(), *p.nonfinite.values(), *_given(p.skipped))
        ]
        values = iter(torch.cat(flat).tolist())
        rows = []
        for p in pending:
            tasks = {
                task: dict(zip(("tp", "fp", "fn"), (next(values) for _ in range(3)), strict=True))
                for task in p.counts
            }
            row = {"epoch": p.epoch, "split": "train_batch", "step": p.step, "tasks": tasks}
            bad = [task for task in p.nonfinite if next(values)]
            if bad:
                row["nonfinite"] = bad
            if p.skipped is not None and next(values):
                row["skipped_step"] = True
            rows.append(row)
        return rows


def row_warnings(row: dict) -> list[str]:
    """The warnings a row of :meth:`StepLog.read` carries, naming its step."""
    step = row["step"]
    warnings = [
        f"step {step}: task {task!r} has a non-finite loss; left out of this step"
        for task in row.get("nonfinite", [])
    ]
    if row.get("skipped_step"):
        warnings.append(
            f"step {step}: a gradient was not finite; the optimizer step was skipped "
            "(weights unchanged)"
        )
    return warnings


def means_of(state: dict) -> dict[str, float]:
    """The means of the sums :meth:`EpochLosses.state` gives (a part never finite: left out)."""
    sums, counts = state["sums"], state["counts"]
    return {k: sums[k] / counts[k] for k in sums if counts[k]}


def _given(tensor: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    return () if tensor is None else (tensor,)


@dataclass
class EpochLosses:
    """An epoch's running loss sums (the total, and each part the loss returns as a tensor) on
    the device, a value that is not finite left out of its mean; and, per task, the batches
    without a label of it (known on the host)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, loss: torch.Tensor, parts: dict) -> None:
        for task in parts["skipped"]:
            self.skipped[task] = self.skipped.get(task, 0) + 1
        values = {"loss": loss.detach(), **{k: v for k, v in parts.items() if torch.is_tensor(v)}}
        for name, value in values.items():
            finite = torch.isfinite(value)
            self.sums[name] = self.sums.get(name, 0.0) + torch.where(finite, value.float(), 0.0)
            self.counts[name] = self.counts.get(name, 0) + finite.float()

    def state(self, world: World | None = None) -> dict:
        """The sums so far as plain numbers (one read-back), for a checkpoint inside an epoch;
        under torchrun every process's together (a collective)."""
        sums, counts = self.totals()
        skipped = dict(self.skipped)
        if world is not None:
            sums, counts, skipped = summed_over_processes((sums, counts, skipped), world)
        return {"sums": sums, "counts": counts, "skipped": skipped}

    @classmethod
    def from_state(cls, state: dict | None, device: torch.device) -> EpochLosses:
        """Sums that :meth:`state` gave (None: none yet); they go on exactly as if never saved
        (the float32 sums round-trip through Python floats unchanged)."""
        if not state:
            return cls()

        def tensors(numbers: dict[str, float]) -> dict[str, torch.Tensor]:
            return {
                k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in numbers.items()
            }

        return cls(tensors(state["sums"]), tensors(state["counts"]), dict(state["skipped"]))

    def totals(self) -> tuple[dict[str, float], dict[str, float]]:
        """``(sums, counts)`` read back in one go."""
        names = list(self.sums)
        if not names:
            return {}, {}
        pairs = torch.stack([torch.stack([self.sums[n], self.counts[n]]) for n in names]).tolist()
        return (
            {n: s for n, (s, _) in zip(names, pairs, strict=True)},
            {n: c for n, (_, c) in zip(names, pairs, strict=True)},
        )

    def means(self, world: World | None = None) -> dict[str, float]:
        """Mean of each part over the batches where it was finite (every process's batches
        together under torchrun); a part never finite is left out."""
        return means_of(self.state(world))

    def postfix(self) -> dict[str, str]:
        """The progress bar's running means: the total and each task's, not each term's."""
        return {k: f"{v:.3f}" for k, v in self.means().items() if "/" not in k}
