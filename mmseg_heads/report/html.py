"""One self-contained HTML page (figures embedded as PNG data URIs): opens offline, mails as one file."""

from __future__ import annotations

import base64
import html

import numpy as np

from mmseg_heads.report import plots, tables

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; margin: 0.3em 0; }
.note { color: #555; font-size: 0.9em; }
section { border-top: 2px solid #ddd; margin-top: 1.5em; }
"""

# After load, record how many images really decoded, so a headless browser test can read it.
CHECK_SCRIPT = """
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = loaded + '/' + images.length;
});
"""


def _cell(text: str, title: str | None) -> str:
    attr = f' title="{html.escape(title)}"' if title else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def _table(
    table: tables.Table, attrs: str = "", titles: list[list[str | None]] | None = None
) -> str:
    """``titles``, when given, holds a tooltip (or ``None``) per body cell."""
    header, rows = table
    titles = titles or [[None] * len(row) for row in rows]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(_cell(c, t) for c, t in zip(row, tips, strict=True)) + "</tr>"
        for row, tips in zip(rows, titles, strict=True)
    )
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _task_section(task: str, summary: dict, report: dict, records: list[dict], draw: bool) -> str:
    annotated = summary.get("annotated_on") or []
    parts = [
        f'<section id="task-{html.escape(task)}"><h2>Task <code>{html.escape(task)}</code>'
        + (f" (annotated on {html.escape(', '.join(annotated))})" if annotated else "")
        + "</h2>",
        _table(tables.class_table(summary), f'class="classes" data-task="{html.escape(task)}"'),
    ]
    if draw:
        parts.append(_image(plots.class_scores(task, summary), f"{task} per-class scores"))
        parts.append(_image(plots.confusion(task, summary), f"{task} confusion matrix"))
        parts.append(_image(plots.training_curves(task, records), f"{task} training curves"))
        examples = report.get("_examples")
        if examples:
            picks = report["examples"].get(task, {})
            scores = report["per_sample"].get(task, {})
            palette = plots.report_palette(summary)
            figure = plots.overlays(task, examples, picks, scores, annotated, palette)
            parts.append(_image(figure, f"{task} examples"))
    parts.append("</section>")
    return "\n".join(parts)


def _nesting_section(report: dict) -> str:
    table = tables.nesting_table(report)
    if table is None:
        return ""
    return (
        f'<section><h2>Nesting</h2><p class="note">{html.escape(tables.NESTING_NOTE)}</p>'
        f"{_table(table)}</section>"
    )


def _gates_section(report: dict, draw: bool) -> str:
    table = tables.gate_table(report)
    if table is None:
        return ""
    header, rows = table
    parts = [
        "<section><h2>Which modality each task relies on</h2>",
        '<p class="note">Mean attention weight over samples and strides: task-specific modality '
        "attention of heads with <code>gate: attention</code>, and the trunk's attention fusion. "
        "Weights sum to 1 over the modalities.</p>",
        _table(table),
    ]
    if draw:
        values = np.array([[float(c) if c != "—" else np.nan for c in row[1:]] for row in rows])
        parts.append(
            _image(
                plots.heatmap("attention weight", [r[0] for r in rows], header[1:], values),
                "attention weights",
            )
        )
    return "\n".join(parts) + "</section>"


def _per_case_section(report: dict, draw: bool) -> str:
    summary = tables.per_case_summary_table(report)
    if summary is None:
        return ""
    parts = [
        '<section id="per-case"><h2>Per-case scores (volumes)</h2>',
        f'<p class="note">{html.escape(tables.PER_CASE_NOTE)} Hover over a — for the reason.</p>',
        _table(summary, 'class="per-case-summary"'),
    ]
    for task in report["per_case"]:
        parts += [
            f"<h3>Task <code>{html.escape(task)}</code></h3>",
            _table(
                tables.per_case_table(report, task),
                f'class="per-case" data-task="{html.escape(task)}"',
                tables.per_case_reasons(report, task),
            ),
        ]
        if draw:
            parts.append(
                _image(plots.per_case_boxplot(report, task), f"{task} per-case Dice and HD95")
            )
    return "\n".join(parts) + "</section>"


def _ablation_section(report: dict, draw: bool) -> str:
    if "ablation" not in report:
        return ""
    parts = [
        "<section><h2>Modality ablation</h2>",
        f'<p class="note">{html.escape(report["ablation_path"])}</p>',
        _table(tables.ablation_table(report), 'class="ablation"'),
    ]
    if draw:
        tasks = list(report["tasks"])
        modalities = list(report["ablation"])
        deltas = np.array(
            [
                [
                    report["ablation"][m][t]["delta"]
                    if report["ablation"][m][t]["delta"] is not None
                    else np.nan
                    for t in tasks
                ]
                for m in modalities
            ]
        )
        title = "ΔF (macro foreground) when a modality is missing"
        parts.append(
            _image(
                plots.heatmap(
                    title,
                    [f"without {m}" for m in modalities],
                    tasks,
                    deltas,
                    fmt="{:+.2f}",
                    cmap="RdBu",
                    centre=True,
                ),
                "ablation",
            )
        )
    return "\n".join(parts) + "</section>"


def html_report(report: dict, records: list[dict] | None = None) -> str:
    """The report page; figures need matplotlib (the ``report`` extra), tables do not."""
    draw = plots.available()
    beta = next(iter(report["tasks"].values()))["beta"]
    body = [
        f"<h1>Evaluation on split <code>{html.escape(report['split'])}</code></h1>",
        f'<p class="note">Checkpoint <code>{html.escape(report["checkpoint"])}</code> (epoch '
        f"{report['epoch']}), data spec <code>{html.escape(report['data_spec'])}</code>, "
        f"{report['samples']} samples, fusion <code>{html.escape(str(report.get('fusion')))}</code>. "
        f"Inference: {html.escape(tables.inference_text(report))}. "
        f"F is F-beta with beta = {beta:g}; — marks an undefined score (class absent from labels "
        f"and predictions). {html.escape(tables.SUMMARY_NOTE)}</p>",
        _table(tables.summary_table(report), 'class="summary"'),
    ]
    if not draw:
        body.append(
            '<p class="note">Install the <code>report</code> extra (matplotlib) for figures.</p>'
        )
    body += [_task_section(t, s, report, records or [], draw) for t, s in report["tasks"].items()]
    body += [
        _per_case_section(report, draw),
        _nesting_section(report),
        _gates_section(report, draw),
        _ablation_section(report, draw),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>mmseg_heads report: {html.escape(report['split'])}</title>"
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
