"""Evaluate a checkpoint: per-task metrics, per-sample scores, gate weights, modality ablation.

:func:`evaluate` returns the report dict written as ``report.json`` (schema in
``docs/report.md``) and, for the HTML page, the example samples to draw.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mmseg_heads.config import Config
from mmseg_heads.data.dataset import MultiModalDataset
from mmseg_heads.data.spec import IGNORE_INDEX, DataSpec, TaskSpec
from mmseg_heads.engine.evaluator import EvalResult, ExampleKeeper, run_evaluation
from mmseg_heads.engine.loaders import eval_loader
from mmseg_heads.engine.precision import resolve_precision
from mmseg_heads.engine.run import RunCheckpoint, load_run, run_dir_of
from mmseg_heads.engine.threads import configure_threads
from mmseg_heads.metrics.per_case import case_scores, summarize_cases
from mmseg_heads.models.build import encoder_groups
from mmseg_heads.models.fusion import FUSIONS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Worst and best samples per task drawn in the HTML report.
EXAMPLES_PER_END = 2


def ablation_path(config: Config) -> str:
    """One sentence saying how a missing modality reaches the model, for the report."""
    fusion = config.model["fusion"]
    how = getattr(FUSIONS.get(fusion), "missing_modality", f"the {fusion} fusion leaves it out")
    groups = encoder_groups(config.model["encoders"], list(config.spec.modalities))
    stacked = [g for g in groups if "+" in g]
    early = (
        "the missing modality's channels are zeros (its normalised mean) and the encoder still "
        "runs on the others"
    )
    if stacked and len(groups) == 1:  # early fusion only: there is no encoder to leave out
        return f"All modalities share one encoder ({stacked[0]}, early fusion): {early}."
    own = (
        "The modality is removed from the input; its encoder does not run; "
        f"{how}; a head branching off that modality alone sees zero features."
    )
    if not stacked:
        return own
    return (
        f"{own[:-1]} (for a modality with an encoder of its own). In the stacked "
        f"group{'s' if len(stacked) > 1 else ''} {', '.join(stacked)} (early fusion) {early}."
    )


def _summaries(result: EvalResult, beta: float) -> dict[str, dict]:
    return {task: matrix.summary(beta) for task, matrix in result.matrices.items()}


def _ablation(
    full: dict[str, dict], without: dict[str, dict], alone: dict[str, str]
) -> dict[str, dict]:
    """Per task, F without the modality and its change; ``alone``: ``{task: why}`` for heads
    that branch off the missing modality alone. Those see zero features, and the constant
    mask they give says nothing about the modality: they are ``not_applicable``, with no score."""

    def delta(a, b):
        return None if a is None or b is None else a - b

    out = {}
    for task, summary in without.items():
        reference = full[task]
        why = alone.get(task)
        score = None if why else summary["macro_foreground_f"]
        out[task] = {
            "macro_foreground_f": score,
            "full": reference["macro_foreground_f"],
            "delta": delta(score, reference["macro_foreground_f"]),
            "per_class": {
                c: {
                    "f": None if why else v["f"],
                    "full": reference["per_class"][c]["f"],
                    "delta": None if why else delta(v["f"], reference["per_class"][c]["f"]),
                }
                for c, v in summary["per_class"].items()
            },
        }
        if why:
            out[task]["not_applicable"] = why
    return out


def _heads_on_alone(config: Config, modality: str) -> dict[str, str]:
    """``{task: why}`` for the heads whose only source is ``modality``."""
    return {
        task: f"its head branches off {modality} alone (no features without it)"
        for task in config.spec.tasks
        if model_head_config(config, task)["source"] == modality
    }


def _examples(per_sample: dict[str, dict[str, float | None]]) -> dict[str, dict[str, list[str]]]:
    out = {}
    for task, scores in per_sample.items():
        ranked = sorted((s, i) for i, s in scores.items() if s is not None)
        n = min(EXAMPLES_PER_END, len(ranked) // 2)
        out[task] = {"worst": [i for _, i in ranked[:n]], "best": [i for _, i in ranked[::-1][:n]]}
    return out


def evaluate(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    ablate: bool = False,
    with_examples: bool = False,
    progress: bool = False,
    window: int | None = None,
    overlap: float | None = None,
    tta: tuple[str, ...] | None = None,
) -> dict:
    """Evaluate a checkpoint on a split; returns the report dict.

    ``window``, ``overlap`` and ``tta`` replace the run's ``eval`` options (see
    :class:`~mmseg_heads.engine.inference.Inference`). With ``with_examples``,
    ``report["_examples"]`` holds the worst and best samples' arrays (for the HTML page; not
    written to JSON).
    """
    run = load_run(checkpoint, data)
    config, model, state, path = run
    log.info("threads: %d (%s)", *configure_threads(config.train["threads"]))
    inference = run.inference(window, overlap, tta)
    split = split or config.eval["split"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(config.train["precision"], device)
    loader = eval_loader(config.spec, split, run_batch_size(config, state), config.train["workers"])
    model = model.to(device, memory_format=torch.channels_last)
    beta = config.eval["beta"]
    common = {
        "device": device,
        "precision": precision,
        "progress": progress,
        "inference": inference,
    }
    volumes = config.spec.volume is not None
    # the HTML page's worst and best samples, kept as they were segmented (no second pass)
    keeper = ExampleKeeper(EXAMPLES_PER_END) if with_examples else None
    result = run_evaluation(
        model, loader, config.spec, per_sample=True, per_case=volumes, gates=True,
        examples=keeper, **common,
    )  # fmt: skip
    summaries = _summaries(result, beta)
    report = {
        "schema_version": SCHEMA_VERSION,
        "split": split,
        "data_spec": str(config.spec.path),
        "checkpoint": str(path),
        "run_dir": str(run_dir_of(path)),
        "epoch": state.epoch,
        "samples": len(loader.dataset),
        "precision": precision,
        "inference": inference.describe(),
        "modalities": config.spec.input_channels(),
        "missing_modalities": run.missing_modalities(),
        "preprocessing": config.spec.preprocessing(),
        "encoder_groups": {g: list(ms) for g, ms in model.trunk.groups.items()},
        "fusion": config.model["fusion"],
        "heads": {task: model_head_config(config, task) for task in config.spec.tasks},
        "tasks": {
            task: summary | task_extras(config.spec.tasks[task])
            for task, summary in summaries.items()
        },
        "per_sample": result.per_sample,
        "gates": {"heads": result.head_weights, "fusion": result.fusion_weights},
        "examples": _examples(result.per_sample),
    }
    if result.nested:
        report["with_nesting"] = {t: m.summary(beta) for t, m in result.nested.items()}
    if volumes:
        report["per_case"] = per_case_report(result, loader.dataset, config.spec)
    if ablate:
        report["ablation_path"] = ablation_path(config)
        report["ablation"] = {}
        for modality in config.spec.modalities:
            without = run_evaluation(model, loader, config.spec, missing=(modality,), **common)
            report["ablation"][modality] = _ablation(
                summaries, _summaries(without, beta), _heads_on_alone(config, modality)
            )
    if with_examples:
        ids = sorted(
            {i for ends in report["examples"].values() for group in ends.values() for i in group}
        )
        report["_examples"] = keeper.pick(ids)
    return report


def per_case_report(result: EvalResult, dataset: MultiModalDataset, spec: DataSpec) -> dict:
    """Per task: each case's per-class Dice and HD95 (its evaluated slices stacked in slice
    order, the voxel size from its label file) and their mean ± sd over cases."""
    out = {}
    for task, cases in result.case_slices.items():
        classes = list(spec.tasks[task].classes)
        scores, units = {}, set()
        for case, slices in sorted(cases.items()):
            pred, target = stack_slices(slices)
            spacing = dataset.plane_spacing(case, task)
            units.add("mm" if spacing is not None else "voxel")
            scores[case] = case_scores(pred, target, classes, spacing or (1.0,) * 3, IGNORE_INDEX)
        out[task] = {
            "unit": "mm" if units == {"mm"} else "voxel",
            "cases": scores,
            "summary": summarize_cases(scores),
        }
    return out


def stack_slices(slices: dict[int, tuple]) -> tuple[np.ndarray, np.ndarray]:
    """``{slice index: (prediction, label)}`` -> two ``S×H×W`` volumes from the first to the last
    index. A slice not evaluated (``volume.keep: labelled``) is ignore in the label and
    background in the prediction, so distances across it keep their true length."""
    first, last = min(slices), max(slices)
    shape = next(iter(slices.values()))[0].shape
    pred = np.zeros((last - first + 1, *shape), np.uint8)
    target = np.full_like(pred, IGNORE_INDEX)
    for index, (p, t) in slices.items():
        pred[index - first], target[index - first] = p, t
    return pred, target


def task_extras(task: TaskSpec) -> dict:
    """What a report's task entry holds beside the scores: the modalities the labels were drawn on
    and the task's colours (so that the report draws classes as ``predict`` does)."""
    return {
        "annotated_on": list(task.annotated_on),
        "palette": [list(colour) for colour in task.palette],
    }


def run_batch_size(config: Config, checkpoint: RunCheckpoint) -> int:
    """The run's batch size; ``auto`` means the one measured when it started (kept in each
    checkpoint), or 8 for checkpoints from before ``auto`` existed."""
    size = config.train["batch_size"]
    if size != "auto":
        return size
    return checkpoint.batch_size if checkpoint.batch_size is not None else 8


def model_head_config(config: Config, task: str) -> dict:
    return {"source": "fused", "decoder": "shared", "gate": "none"} | config.model["heads"].get(
        task, {}
    )
