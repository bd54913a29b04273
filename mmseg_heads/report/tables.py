"""The report's tables as header + rows of strings, rendered by both Markdown and HTML."""

from __future__ import annotations

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
    flips = (
        f"test-time flips {', '.join(tta)} ({2 ** len(tta)} passes averaged)"
        if tta
        else "no test-time flips"
    )
    return f"{how}; {flips}"


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
        rows.append(
            [modality]
            + [
                f"{fmt(per_task[t]['macro_foreground_f'])} ({fmt(per_task[t]['delta'], signed=True)})"
                for t in tasks
            ]
        )
    return header, rows


def gate_table(report: dict) -> Table | None:
    """Task × encoder group: mean attention weight (task gates, and the trunk's fusion)."""
    gates = report.get("gates", {})
    groups = list(report.get("encoder_groups", {}))
    rows = [[task] + [fmt(w.get(g)) for g in groups] for task, w in gates.get("heads", {}).items()]
    if gates.get("fusion"):
        rows.append(["trunk fusion (all tasks)"] + [fmt(gates["fusion"].get(g)) for g in groups])
    return (["task"] + groups, rows) if rows else None


def markdown(table: Table) -> list[str]:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
