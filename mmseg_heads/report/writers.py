"""Write an evaluation report: ``report.json``, ``report.md`` and ``report.html`` (atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from mmseg_heads.atomic import refuse_foreign, write_atomic
from mmseg_heads.report import tables

__all__ = [
    "REPORT_FILES",
    "check_report_folder",
    "json_report",
    "markdown_report",
    "write_atomic",
    "write_report",
]

#: The files :func:`write_report` writes into its folder.
REPORT_FILES = ("report.json", "report.md", "report.html")
#: How our report.md and report.html begin (see :func:`markdown_report` and ``html.html_report``).
_MARKDOWN_START = "# Evaluation on split `"
_HTML_MARK = "<title>mmseg_heads report: "


def markdown_report(report: dict) -> str:
    beta = next(iter(report["tasks"].values()))["beta"]
    lines = [
        f"# Evaluation on split `{report['split']}`",
        "",
        f"Checkpoint `{report['checkpoint']}` (epoch {report['epoch']}), data spec "
        f"`{report['data_spec']}`, {report['samples']} samples. Inference: "
        f"{tables.inference_text(report)}. F is F-beta with beta = {beta:g}; "
        "— marks a score that is undefined (0/0: e.g. precision of a class never predicted, "
        "or every score of a class absent from labels and predictions). " + tables.SUMMARY_NOTE,
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
    per_case = tables.per_case_summary_table(report)
    if per_case:
        lines += [
            "",
            "## Per-case scores (volumes)",
            "",
            tables.PER_CASE_NOTE,
            "",
            *tables.markdown(per_case),
        ]
        for task in report["per_case"]:
            lines += ["", f"### {task}", "", *tables.markdown(tables.per_case_table(report, task))]
    nesting = tables.nesting_table(report)
    if nesting:
        lines += ["", "## Nesting", "", tables.NESTING_NOTE, "", *tables.markdown(nesting)]
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


def _report_run(path: Path) -> Path | None:
    """The run directory a ``report.json`` of ours names; ``None`` for any other file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or "schema_version" not in data or "tasks" not in data:
        return None
    return Path(data["run_dir"]) if isinstance(data.get("run_dir"), str) else None


def _starts_with(path: Path, marker: str, size: int = 4096) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return marker in handle.read(size)
    except OSError:
        return False


def check_report_folder(out: Path, run_dir: Path, *, field: str = "--out") -> None:
    """Refuse, before any work, to write a report over files in ``out`` that are not a previous
    report of the same run: files the user wrote, or another run's report.

    A previous report of ours is told by its ``report.json`` (valid JSON holding our
    ``schema_version`` and ``tasks``, and ``run_dir`` naming ``run_dir``) and by how our
    ``report.md`` and ``report.html`` begin.

    Raises:
        UserError: naming ``out`` and ``field``, listing the files in the way.
    """
    existing = [out / name for name in REPORT_FILES if (out / name).exists()]
    if not existing:
        return
    json_path = out / "report.json"
    reported = _report_run(json_path) if json_path.is_file() else None
    ours = {
        json_path: reported is not None,
        out / "report.md": _starts_with(out / "report.md", _MARKDOWN_START),
        out / "report.html": _starts_with(out / "report.html", _HTML_MARK),
    }
    refuse_foreign(
        existing, lambda path: path.is_file() and ours[path], field, writer="`evaluate`", file=out
    )
    if reported is not None and reported.resolve() != run_dir.resolve():
        refuse_foreign(
            existing,
            lambda path: False,  # ours, but another run's
            field,
            writer="`evaluate`",
            file=out,
            why=f"the report of another run ({reported})",
        )
    # Otherwise our own earlier report of this run: evaluating again replaces it.


def write_report(report: dict, out: Path, *, metrics_log: Path | None = None) -> list[Path]:
    """Write the three files into ``out``; the HTML page embeds its figures."""
    from mmseg_heads.report.html import html_report

    paths = [out / name for name in REPORT_FILES]
    write_atomic(paths[0], json_report(report))
    write_atomic(paths[1], markdown_report(report))
    records = []
    if metrics_log is not None and metrics_log.is_file():
        records = [
            json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()
        ]
    write_atomic(paths[2], html_report(report, records))
    return paths
