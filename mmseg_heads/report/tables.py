"""The report's tables as header + rows of strings, rendered by both Markdown and HTML."""

from __future__ import annotations

import re

Table = tuple[list[str], list[list[str]]]

SCORES = ("precision", "recall", "f", "iou", "dice")


def inference_text(report: dict) -> str:
    """How the images went through the network, in words (reports before ``eval.window`` and
    ``eval.tta`` existed segmented whole images without flips)."""
    inference = report.get("inference") or {}
    window, tta = inference.get("window"), inference.get("tta") or []
    how = (
        f"{window}-pixel sliding windows, overlap {inference.get('overlap', 0.5):g}, "
        "Gaussian-weighted"
        if window
        else "whole images"
    )
    nesting = (
        "; nested as the data spec's `inside` says" if inference.get("nesting") == "on" else ""
    )
    flips = (
        f"test-time flips {', '.join(tta)} ({2 ** len(tta)} passes averaged)"
        if tta
        else "no test-time flips"
    )
    missing = report.get("missing_modalities") or []
    without = (
        f"; without {', '.join(missing)} (not in the data spec: the model's missing-modality path)"
        if missing
        else ""
    )
    return f"{how}; {flips}{nesting}{without}"


def fmt(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


#: The summary's score columns: (header, key in ``report.json``'s task entry). mIoU is the mean
#: over all classes, background included, as MMSegmentation's ``mIoU``; ``micro_f`` is left out
#: (it always equals ``pixel_accuracy`` in a single-label map; see docs/report.md).
SUMMARY_SCORES = (
    ("macro foreground F", "macro_foreground_f"),
    ("mIoU (with background)", "macro_iou"),
    ("foreground mIoU", "macro_foreground_iou"),
    ("mean foreground Dice", "macro_foreground_dice"),
    ("macro F", "macro_f"),
    ("pixel accuracy", "pixel_accuracy"),
)

#: How to read the summary's means: said under the heading of report.md and report.html.
SUMMARY_NOTE = (
    "mIoU averages IoU over all classes, background included, as MMSegmentation's mIoU does; "
    "Dice is F-1 whatever beta is, so mean foreground Dice equals macro foreground F only at "
    "beta = 1."
)


def summary_table(report: dict) -> Table:
    """One row per task; a score a report lacks (written before the key existed) shows —."""
    header = ["task", "annotated on", "head"] + [label for label, _ in SUMMARY_SCORES]
    rows = []
    for task, t in report["tasks"].items():
        head = report.get("heads", {}).get(task, {})
        head_text = ", ".join(f"{k}: {v}" for k, v in head.items())
        rows.append(
            [task, ", ".join(t.get("annotated_on", [])) or "—", head_text]
            + [fmt(t.get(key)) for _, key in SUMMARY_SCORES]
        )
    return header, rows


def class_table(summary: dict) -> Table:
    header = ["class", "support", "TP", "FP", "FN", "precision", "recall", "F", "IoU", "Dice"]
    rows = []
    for name, c in summary["per_class"].items():
        label = f"{name} (absent)" if c["absent"] else name
        rows.append(
            [label, str(c["support"]), str(c["tp"]), str(c["fp"]), str(c["fn"])]
            + [fmt(c[k]) for k in SCORES]
        )
    return header, rows


def ablation_table(report: dict) -> Table:
    """Rows: missing modality; columns: per task, F without it and ΔF against the full input."""
    tasks = list(report["tasks"])
    header = ["missing modality"] + [f"{t} F (Δ)" for t in tasks]
    rows = [["none (full input)"] + [fmt(report["tasks"][t]["macro_foreground_f"]) for t in tasks]]
    for modality, per_task in report.get("ablation", {}).items():
        rows.append([modality] + [_ablated_cell(per_task[t], modality) for t in tasks])
    return header, rows


def _ablated_cell(entry: dict, modality: str) -> str:
    if "not_applicable" in entry:  # a head on that modality alone: no score to give
        return f"n/a (head on {modality} alone)"
    return f"{fmt(entry['macro_foreground_f'])} ({fmt(entry['delta'], signed=True)})"


NESTING_NOTE = (
    "The data spec declares tasks whose foreground lies inside classes of another task "
    "(`inside`). The scores above are of the masks as the model gives them; with nesting, a "
    "nested task's foreground outside its parents' predicted classes becomes background "
    "(`eval.nesting: on` makes that the headline and the masks `predict` writes):"
)


def nesting_table(report: dict) -> Table | None:
    """Per nested task: macro foreground F as the model gives it, with nesting, and Δ."""
    nested_scores = report.get("with_nesting") or {}
    rows = []
    for task, summary in nested_scores.items():
        plain, nested = report["tasks"][task]["macro_foreground_f"], summary["macro_foreground_f"]
        delta = None if nested is None or plain is None else nested - plain
        rows.append([task, fmt(plain), fmt(nested), fmt(delta, signed=True)])
    header = ["task", "macro foreground F", "with nesting", "Δ (nested − as given)"]
    return (header, rows) if rows else None


def gate_table(report: dict) -> Table | None:
    """Task × encoder group: mean attention weight (task gates, and the trunk's fusion)."""
    gates = report.get("gates", {})
    groups = list(report.get("encoder_groups", {}))
    if len(groups) < 2:  # one encoder (early fusion): every weight is trivially 1
        return None
    rows = [[task] + [fmt(w.get(g)) for g in groups] for task, w in gates.get("heads", {}).items()]
    if gates.get("fusion"):
        rows.append(["trunk fusion (all tasks)"] + [fmt(gates["fusion"].get(g)) for g in groups])
    return (["task"] + groups, rows) if rows else None


def markdown(table: Table) -> list[str]:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# --- per-case scores (volumes) ----------------------------------------------------------------

#: How to read the per-case tables: said under their heading in report.md and report.html.
PER_CASE_NOTE = (
    "Dice and HD95 of each case (one volume: the split's slices of the case stacked in slice "
    "order), as MRI challenges report them, and their mean ± sd over the cases where they are "
    "defined, with that number of cases n; — where a score is undefined, e.g. a class absent from "
    "both the label and the prediction of a case (HD95 also when either is empty)."
)


def _natural(text: str) -> list:
    """Sort key that puts ``Case9`` before ``Case10``."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)
    ]


def per_case_classes(entry: dict) -> list[str]:
    """A task's foreground classes in ``per_case``: the summary's order, then any a case adds."""
    names = list(entry.get("summary", {}))
    for scores in entry.get("cases", {}).values():
        names += [name for name in scores if name not in names]
    return names


def mean_sd_text(stat: dict | None, suffix: str = "") -> str:
    """``"0.812 ± 0.061 (5)"``; ``"0.812 (1)"`` without an sd; ``"—"`` without a mean."""
    if not stat or stat.get("mean") is None:
        return "—"
    sd = f" ± {fmt(stat['sd'])}" if stat.get("sd") is not None else ""
    return f"{fmt(stat['mean'])}{sd}{suffix} ({stat.get('n', 0)})"


def per_case_summary_table(report: dict) -> Table | None:
    """Task × foreground class: per-case Dice and HD95 as mean ± sd (n); ``None`` without
    ``per_case`` (2-D data sets, and reports written before the key existed)."""
    per_case = report.get("per_case") or {}
    if not per_case:
        return None
    units = {entry.get("unit", "mm") for entry in per_case.values()}
    shared = units.pop() if len(units) == 1 else None
    header = [
        "task",
        "class",
        "Dice per case (mean ± sd, n)",
        "HD95 per case (mean ± sd, n)" + (f" {shared}" if shared else ""),
    ]
    rows = []
    for task, entry in per_case.items():
        suffix = "" if shared else f" {entry.get('unit', 'mm')}"
        summary = entry.get("summary", {})
        for name in per_case_classes(entry):
            scores = summary.get(name, {})
            rows.append(
                [
                    task,
                    name,
                    mean_sd_text(scores.get("dice")),
                    mean_sd_text(scores.get("hd95"), suffix),
                ]
            )
    return header, rows


def per_case_table(report: dict, task: str) -> Table:
    """Rows: the task's cases (in natural order); columns: Dice and HD95 of each foreground class."""
    entry = report["per_case"][task]
    unit = entry.get("unit", "mm")
    classes = per_case_classes(entry)
    header = ["case"] + [
        text for name in classes for text in (f"Dice {name}", f"HD95 {name} ({unit})")
    ]
    rows = []
    for case in sorted(entry.get("cases", {}), key=_natural):
        scores = entry["cases"][case]
        rows.append(
            [case]
            + [fmt(scores.get(name, {}).get(key)) for name in classes for key in ("dice", "hd95")]
        )
    return header, rows


def per_case_reasons(report: dict, task: str) -> list[list[str | None]]:
    """Per cell of :func:`per_case_table`: why its value is undefined (``None`` where it is not,
    and for the case column); the HTML page shows it as the cell's tooltip."""
    entry = report["per_case"][task]
    classes = per_case_classes(entry)
    out = []
    for case in sorted(entry.get("cases", {}), key=_natural):
        scores = entry["cases"][case]
        row: list[str | None] = [None]
        for name in classes:
            cell = scores.get(name)
            for key in ("dice", "hd95"):
                if cell is None:
                    row.append("class not scored in this case")
                elif cell.get(key) is None:
                    row.append(cell.get("reason") or "undefined")
                else:
                    row.append(None)
        out.append(row)
    return out
