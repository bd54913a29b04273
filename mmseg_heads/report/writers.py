"""Write an evaluation report: ``report.json``, ``report.md`` and ``report.html`` (atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from mmseg_heads.atomic import write_atomic
from mmseg_heads.report import tables

__all__ = ["json_report", "markdown_report", "write_atomic", "write_report"]


def markdown_report(report: dict) -> str:
    beta = next(iter(report["tasks"].values()))["beta"]
    lines = [
        f"# Evaluation on split `{report['split']}`",
        "",
        f"Checkpoint `{report['checkpoint']}` (epoch {report['epoch']}), data spec "
        f"`{report['data_spec']}`, {report['samples']} samples. F is F-beta with beta = {beta:g}; "
        "— marks a score that is undefined (0/0: e.g. precision of a class never predicted, "
        "or every score of a class absent from labels and predictions).",
        "",
        *tables.markdown(tables.summary_table(report)),
    ]
    for task, summary in report["tasks"].items():
        annotated = (
            f" (annotated on {', '.join(summary['annotated_on'])})"
            if summary.get("annotated_on")
            else ""
        )
        lines += ["", f"## {task}{annotated}", "", *tables.markdown(tables.class_table(summary))]
    gates = tables.gate_table(report)
    if gates:
        lines += [
            "",
            "## Which modality each task relies on (mean attention weight)",
            "",
            *tables.markdown(gates),
        ]
    if "ablation" in report:
        lines += [
            "",
            "## Modality ablation: macro foreground F with one modality missing",
            "",
            report["ablation_path"],
            "",
            *tables.markdown(tables.ablation_table(report)),
        ]
    return "\n".join(lines) + "\n"


def json_report(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2) + "\n"


def write_report(report: dict, out: Path, *, metrics_log: Path | None = None) -> list[Path]:
    """Write the three files into ``out``; the HTML page embeds its figures."""
    from mmseg_heads.report.html import html_report

    paths = [out / "report.json", out / "report.md", out / "report.html"]
    write_atomic(paths[0], json_report(report))
    write_atomic(paths[1], markdown_report(report))
    records = []
    if metrics_log is not None and metrics_log.is_file():
        records = [
            json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()
        ]
    write_atomic(paths[2], html_report(report, records))
    return paths
