"""Run a model over a split: confusion matrices per task, per-sample scores, gate weights.

``missing`` evaluates with modalities left out of the input, through the model's own
missing-modality path (the fusions exclude them; a branch head on a missing modality sees zero
features): that is how the per-modality ablation is measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmseg_heads.data.spec import IGNORE_INDEX, DataSpec
from mmseg_heads.data.splits import SLICE_SEPARATOR
from mmseg_heads.data.transforms import round_up
from mmseg_heads.engine.inference import WHOLE_IMAGE, Inference, apply_nesting, segment_planes
from mmseg_heads.metrics import functional as MF
from mmseg_heads.metrics.confusion import ConfusionMatrix


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        **batch,
        # channels_last: oneDNN's convolutions run ~1.3× faster on it (bench/whatif.py)
        "images": {
            k: v.to(device, non_blocking=True, memory_format=torch.channels_last)
            for k, v in batch["images"].items()
        },
        "labels": {k: v.to(device, non_blocking=True) for k, v in batch["labels"].items()},
        "has_label": {k: v.to(device, non_blocking=True) for k, v in batch["has_label"].items()},
    } | ({"origin": batch["origin"].to(device, non_blocking=True)} if "origin" in batch else {})


def same_size_parts(batch: dict, multiple: int) -> list[dict]:
    """A collated batch split by each sample's own padded size, cropped to it.

    ``collate`` pads every sample to the largest of its batch; the network's output near an
    image's border depends on how much padding follows it, so each sample is segmented as
    ``predict`` segments it alone: padded to a multiple of ``multiple`` and no more. Then a score
    does not depend on the batch size or on which samples share a batch.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (height, width) in enumerate(batch["size"]):
        groups.setdefault((round_up(height, multiple), round_up(width, multiple)), []).append(index)
    if len(groups) == 1:
        (height, width), _ = next(iter(groups.items()))
        if next(iter(batch["images"].values())).shape[-2:] == (height, width):
            return [batch]
    parts = []
    for (height, width), indices in groups.items():
        rows = torch.tensor(indices)
        parts.append(
            {
                "images": {k: v[rows, :, :height, :width] for k, v in batch["images"].items()},
                "labels": {k: v[rows, :height, :width] for k, v in batch["labels"].items()},
                "has_label": {k: v[rows] for k, v in batch["has_label"].items()},
                "id": [batch["id"][i] for i in indices],
                "size": [batch["size"][i] for i in indices],
            }
        )
    return parts


@dataclass
class EvalResult:
    matrices: dict[str, ConfusionMatrix]
    #: ``{task: {sample id: macro foreground F or None}}`` (filled with ``per_sample=True``)
    per_sample: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: ``{task: {group: mean weight}}`` of task-specific modality attention (``gates=True``)
    head_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``{group: mean weight}`` of the trunk's attention fusion over strides and samples
    fusion_weights: dict[str, float] = field(default_factory=dict)
    #: ``{task: {case: {slice: (prediction, label)}}}``, ``H×W`` uint8 arrays of the labelled
    #: slices of each volume (filled with ``per_case=True``), for per-case scores
    case_slices: dict[str, dict[str, dict[int, tuple]]] = field(default_factory=dict)
    #: ``{task: ConfusionMatrix}`` of the nested tasks' masks after nesting (``nesting: both``;
    #: ``matrices`` then hold them as the model gives them)
    nested: dict[str, ConfusionMatrix] = field(default_factory=dict)


class _WeightMeans:
    """Running means of ``N×groups`` weight tensors."""

    def __init__(self, groups: list[str]):
        self.groups = groups
        self.total = torch.zeros(len(groups), dtype=torch.float64)
        self.count = 0

    def add(self, weights: torch.Tensor) -> None:
        self.total += weights.detach().double().sum(0).cpu()
        self.count += weights.shape[0]

    def means(self) -> dict[str, float]:
        return (
            {g: float(v) / self.count for g, v in zip(self.groups, self.total, strict=True)}
            if self.count
            else {}
        )


class ExampleKeeper:
    """The arrays of each task's ``k`` worst and ``k`` best samples, kept while evaluating, so the
    HTML page's examples show the masks the evaluation scored without segmenting them again.

    Samples rank by ``(score, id)`` as ``evaluate``'s ``examples`` section ranks
    them; arrays of samples that drop out of every task's ends are let go (memory stays at
    ``2 k`` samples per task)."""

    def __init__(self, k: int):
        self.k = k
        self.worst: dict[str, list[tuple]] = {}
        self.best: dict[str, list[tuple]] = {}
        self.arrays: dict[str, dict] = {}

    def offer(self, task: str, sample_id: str, score: float | None, arrays: Callable[[], dict]):
        """Consider one sample; ``arrays()`` is called only if it is kept."""
        if score is None:
            return
        key = (score, sample_id)
        worst = sorted([*self.worst.get(task, []), key])[: self.k]
        best = sorted([*self.best.get(task, []), key], reverse=True)[: self.k]
        self.worst[task], self.best[task] = worst, best
        if key in worst or key in best:
            if sample_id not in self.arrays:
                self.arrays[sample_id] = arrays()
            kept = {i for ends in (*self.worst.values(), *self.best.values()) for _, i in ends}
            self.arrays = {i: a for i, a in self.arrays.items() if i in kept}

    def pick(self, ids) -> dict[str, dict]:
        return {i: self.arrays[i] for i in ids}


def _sample_arrays(batch: dict, classes: dict[str, torch.Tensor], row: int) -> dict:
    """One sample of a batch, cropped to its size, as numpy: images, labels and predictions."""
    height, width = batch["size"][row]
    return {
        "images": {
            m: x[row, :, :height, :width].float().cpu().numpy() for m, x in batch["images"].items()
        },
        "labels": {t: y[row, :height, :width].cpu().numpy() for t, y in batch["labels"].items()},
        "pred": {t: v[row, :height, :width].cpu().numpy() for t, v in classes.items()},
    }


def sample_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float | None]:
    """Macro foreground F of each sample of a batch (None where no foreground is in either)."""
    scores = []
    for p, t in zip(pred, target, strict=True):
        tp, fp, fn = MF.counts(MF.confusion_matrix(p, t, num_classes, IGNORE_INDEX))
        scores.append(MF.nanmean(MF.fbeta(tp, fp, fn)[1:]))
    return scores


@torch.inference_mode()
def run_evaluation(
    model: nn.Module,
    loader: DataLoader,
    spec: DataSpec,
    *,
    device: torch.device,
    precision: str,
    missing: tuple[str, ...] = (),
    per_sample: bool = False,
    per_case: bool = False,
    gates: bool = False,
    progress: bool = False,
    inference: Inference = WHOLE_IMAGE,
    examples: ExampleKeeper | None = None,
) -> EvalResult:
    """Evaluate every labelled pixel of ``loader``; padding and ignore pixels are left out.

    Each sample is segmented as :func:`~mmseg_heads.engine.inference.segment_planes` does for
    ``predict``, with ``inference``'s window and flips; with ``gates``, gate weights are averaged
    over every forward pass (every window and flip); ``examples`` (with ``per_sample``) keeps the
    arrays of each task's worst and best samples."""
    model.eval()
    inference.check(model.trunk.max_stride)

    def matrix(task: str) -> ConfusionMatrix:
        return ConfusionMatrix(list(spec.tasks[task].classes), IGNORE_INDEX, device)

    result = EvalResult({task: matrix(task) for task in spec.tasks})
    if inference.nesting == "both":
        result.nested = {task: matrix(task) for task, _ in inference.nesting_rules}
    groups = list(model.trunk.groups)
    head_means = {task: _WeightMeans(groups) for task in result.matrices}
    fusion_means = _WeightMeans(groups)
    desc = "evaluate" + (f" without {', '.join(missing)}" if missing else "")
    parts = (
        part
        # None: tqdm draws only on a terminal, so piped logs get no carriage-return junk
        for batch in tqdm(loader, desc=desc, disable=None if progress else True, leave=False)
        for part in same_size_parts(batch, model.trunk.max_stride)
    )

    def add_gates(weights: dict) -> None:
        _accumulate_gates(weights, head_means, fusion_means)

    for batch in parts:
        batch = to_device(batch, device)
        images = {m: x for m, x in batch["images"].items() if m not in missing}
        raw = segment_planes(
            model,
            images,
            inference.without_nesting(),
            precision=precision,
            device=device,
            batch_size=loader.batch_size or 1,
            on_gates=add_gates if gates else None,
        )
        # Nested masks only where they are scored: `on` (the headline) or `both` (beside it).
        nesting = inference.nesting != "off" and bool(inference.nesting_rules)
        nested = apply_nesting(raw, inference.nesting_rules) if nesting else raw
        classes = nested if inference.nests else raw
        for task, matrix in result.matrices.items():
            labelled = batch["has_label"][task]
            if not labelled.any():
                continue
            pred, target = classes[task][labelled], batch["labels"][task][labelled]
            if task in result.nested:
                result.nested[task].update(nested[task][labelled], target)
            matrix.update(pred, target)
            if not (per_sample or per_case):
                continue
            ids = [i for i, keep in zip(batch["id"], labelled.tolist(), strict=True) if keep]
            if per_sample:
                scores = sample_scores(pred, target, matrix.num_classes)
                result.per_sample.setdefault(task, {}).update(zip(ids, scores, strict=True))
                if examples is not None:
                    rows = labelled.nonzero().flatten().tolist()
                    for row, sample_id, score in zip(rows, ids, scores, strict=True):
                        arrays = partial(_sample_arrays, batch, classes, row)
                        examples.offer(task, sample_id, score, arrays)
            if per_case:
                sizes = [
                    s for s, keep in zip(batch["size"], labelled.tolist(), strict=True) if keep
                ]
                _keep_slices(result.case_slices.setdefault(task, {}), ids, sizes, pred, target)
    if gates:
        result.head_weights = {t: m.means() for t, m in head_means.items() if m.count}
        result.fusion_weights = fusion_means.means()
    return result


def _keep_slices(cases: dict, ids: list[str], sizes: list, pred, target) -> None:
    """Each ``"{case}#{slice}"`` sample's prediction and label, cropped to its size, by case."""
    for sample_id, (height, width), p, t in zip(ids, sizes, pred, target, strict=True):
        case, index = sample_id.rsplit(SLICE_SEPARATOR, 1)
        cases.setdefault(case, {})[int(index)] = (
            p[:height, :width].to(torch.uint8).cpu().numpy(),
            t[:height, :width].to(torch.uint8).cpu().numpy(),
        )


def _accumulate_gates(weights: dict, head_means: dict, fusion_means: _WeightMeans) -> None:
    """Average task-specific modality weights (over strides) and the trunk's fusion weights."""
    # Strides where only some groups have a level (VGG's stride 1) weigh fewer sources: skip them.
    for task, gate in weights["heads"].items():
        for stride_weights in gate.get("modality", {}).values():
            if stride_weights.shape[1] == len(head_means[task].groups):
                head_means[task].add(stride_weights.float())
    for stride_weights in weights["fusion"].values():
        if stride_weights is not None and stride_weights.shape[1] == len(fusion_means.groups):
            fusion_means.add(stride_weights.float())


def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    spec: DataSpec,
    *,
    device: torch.device,
    precision: str,
    progress: bool = False,
    inference: Inference = WHOLE_IMAGE,
) -> dict[str, ConfusionMatrix]:
    """``{task: ConfusionMatrix}`` over every labelled pixel of the loader (used each epoch)."""
    return run_evaluation(
        model,
        loader,
        spec,
        device=device,
        precision=precision,
        progress=progress,
        inference=inference,
    ).matrices
