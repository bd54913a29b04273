"""The report's tables as header + rows of strings, rendered by both Markdown and HTML."""

from __future__ import annotations

Table = tuple[list[str], list[list[str]]]

SCORES = ("precision", "recall", "f", "iou", "dice")


def fmt(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def summary_table(report: dict) -> Table:
    header = [
        "task",
        "annotated on",
        "head",
        "macro foreground F",
        "macro F",
        "micro F",
        "pixel accuracy",
    ]
    rows = []
    for task, t in report["tasks"].items():
        head = report.get("heads", {}).get(task, {})
        head_text = ", ".join(f"{k}: {v}" for k, v in head.items())
        rows.append(
            [task, ", ".join(t.get("annotated_on", [])) or "—", head_text]
            + [fmt(t[k]) for k in ("macro_foreground_f", "macro_f", "micro_f", "pixel_accuracy")]
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
