"""Compare evaluation reports of several runs side by side, per task and class."""

from __future__ import annotations

import html
import json
from pathlib import Path

from mmseg_heads.errors import UserError
from mmseg_heads.report.tables import Table, fmt, inference_text, markdown, per_case_classes


def find_report(path: str | Path) -> Path:
    """``report.json`` itself, a report folder, or a run directory's newest ``report_*/``."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "report.json").is_file():
        return path / "report.json"
    found = sorted(path.glob("report_*/report.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no report.json; run `mmseg-heads evaluate {path}` first", file=path)
    return found[-1]


def load_reports(paths: list[str | Path]) -> dict[str, dict]:
    reports = {}
    for path in paths:
        report_path = find_report(path)
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"not valid JSON ({exc})", file=report_path) from exc
        if not isinstance(report, dict) or "tasks" not in report:
            raise UserError("not an mmseg_heads report (no `tasks`)", file=report_path)
        name = str(path)
        reports[name if name not in reports else str(report_path)] = report
    return reports


#: The rows above the per-class F rows: (label, key in a task entry); a report written before a
#: key existed shows — in that row. mIoU includes the background, as MMSegmentation's does.
HEADLINE = (
    ("macro foreground F", "macro_foreground_f"),
    ("mIoU (with background)", "macro_iou"),
    ("mean foreground Dice", "macro_foreground_dice"),
)


def _per_case_mean(report: dict, task: str, name: str, key: str) -> float | None:
    """Mean per-case ``key`` ("dice" or "hd95") of class ``name``; ``None`` where the report has
    no ``per_case`` for the task (2-D data, older reports) or no case defines it."""
    entry = (report.get("per_case") or {}).get(task) or {}
    stat = ((entry.get("summary") or {}).get(name) or {}).get(key) or {}
    return stat.get("mean")


def _per_case_rows(reports: dict[str, dict], task: str) -> list[tuple[str, list, bool | None]]:
    """Rows "case Dice <class> (mean)" (higher is better) and "case HD95 <class> (mean, unit)"
    (lower is better) when a report has ``per_case`` for ``task``: (label, values, higher);
    ``higher`` is ``None`` (no best) for HD95 in mm in one report and in voxels in another."""
    entries = [(r.get("per_case") or {}).get(task) for r in reports.values()]
    present = [e for e in entries if e]
    if not present:
        return []
    classes = list(dict.fromkeys(c for e in present for c in per_case_classes(e)))
    units = {e.get("unit", "mm") for e in present}
    unit = units.pop() if len(units) == 1 else None
    rows = []
    for name in classes:
        dice = [_per_case_mean(r, task, name, "dice") for r in reports.values()]
        rows.append((f"case Dice {name} (mean)", dice, True))
    for name in classes:
        hd95 = [_per_case_mean(r, task, name, "hd95") for r in reports.values()]
        if unit is None:
            # Millimetres against voxels: no best to mark, and each cell says its unit.
            units_of = [(e or {}).get("unit", "mm") for e in entries]
            cells = [
                f"{fmt(v)} {u}" if v is not None else fmt(v)
                for v, u in zip(hd95, units_of, strict=True)
            ]
            rows.append((f"case HD95 {name} (mean)", cells, None))
        else:
            rows.append((f"case HD95 {name} (mean, {unit})", hd95, False))
    return rows


def _best(values: list, higher: bool | None) -> int | None:
    """The column of the best defined value (max when ``higher``, min otherwise); ``None`` with
    fewer than two defined values, or when the values are not comparable (``higher`` None)."""
    defined = [(v, i) for i, v in enumerate(values) if v is not None]
    if higher is None or len(defined) < 2:
        return None
    return (max(defined) if higher else min(defined, key=lambda d: (d[0], -d[1])))[1]


def comparison_tables(reports: dict[str, dict]) -> dict[str, tuple[Table, list[int | None]]]:
    """Per task: rows = headline, per-case means (volumes only), classes; columns = runs; and
    the best column of each row (highest, or lowest for HD95)."""
    runs = list(reports)
    tasks = list(dict.fromkeys(t for r in reports.values() for t in r["tasks"]))
    out = {}
    for task in tasks:
        classes = list(
            dict.fromkeys(
                c for r in reports.values() for c in r["tasks"].get(task, {}).get("classes", [])
            )
        )
        scored = []
        headline = [(label, lambda t, key=key: t.get(key)) for label, key in HEADLINE]
        per_class = [
            (f"F {c}", lambda t, c=c: t.get("per_class", {}).get(c, {}).get("f")) for c in classes
        ]
        for label, getter in headline:
            scored.append((label, _task_values(reports, task, getter), True))
        scored += _per_case_rows(reports, task)
        for label, getter in per_class:
            scored.append((label, _task_values(reports, task, getter), True))
        rows, best = [], []
        for label, values, higher in scored:
            best.append(_best(values, higher))
            rows.append([label] + [v if isinstance(v, str) else fmt(v) for v in values])
        out[task] = ((["", *runs], rows), best)
    return out


def _task_values(reports: dict[str, dict], task: str, getter) -> list:
    return [getter(r["tasks"][task]) if task in r["tasks"] else None for r in reports.values()]


def _mark(table: Table, best: list[int | None], bold: tuple[str, str]) -> Table:
    header, rows = table
    marked = []
    for row, column in zip(rows, best, strict=True):
        row = list(row)
        if column is not None:
            row[column + 1] = f"{bold[0]}{row[column + 1]}{bold[1]}"
        marked.append(row)
    return header, marked


def settings_table(reports: dict[str, dict]) -> Table:
    """What each report measured with: checkpoint epoch, split and inference."""
    rows = [
        ["epoch"] + [str(r.get("epoch", "—")) for r in reports.values()],
        ["split"] + [str(r.get("split", "—")) for r in reports.values()],
        ["inference"] + [inference_text(r) for r in reports.values()],
    ]
    return ["", *reports], rows


def comparison_markdown(reports: dict[str, dict]) -> str:
    lines = ["# Run comparison", "", "Best value per row in **bold**; — is undefined or missing."]
    lines += ["", "## Settings", "", *markdown(settings_table(reports))]
    for task, (table, best) in comparison_tables(reports).items():
        lines += ["", f"## {task}", "", *markdown(_mark(table, best, ("**", "**")))]
    return "\n".join(lines) + "\n"


def comparison_html(reports: dict[str, dict]) -> str:
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Run comparison</title>",
             "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}</style></head><body>",
             "<h1>Run comparison</h1><p>Best value per row in bold; — is undefined or missing.</p>"]  # fmt: skip
    header, rows = settings_table(reports)
    parts.append("<h2>Settings</h2><table data-task='settings'><tr>")
    parts.append("".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
    parts.append("</table>")
    for task, (table, best) in comparison_tables(reports).items():
        header, rows = table
        parts.append(f"<h2>{html.escape(task)}</h2><table data-task='{html.escape(task)}'><tr>")
        parts.append("".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row, column in zip(rows, best, strict=True):
            cells = [html.escape(c) for c in row]
            if column is not None:
                cells[column + 1] = f"<strong>{cells[column + 1]}</strong>"
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "</body></html>\n"
