"""Write an evaluation report as JSON and Markdown (atomically: no half-written file)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCORES = ("precision", "recall", "f", "iou", "dice")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown_report(report: dict) -> str:
    lines = [
        f"# Evaluation on split `{report['split']}`",
        "",
        f"Checkpoint `{report['checkpoint']}` (epoch {report['epoch']}), data spec `{report['data_spec']}`, "
        f"{report['samples']} samples. F is F-beta with beta = "
        f"{next(iter(report['tasks'].values()))['beta']:g}; — marks a score that is undefined "
        "(a class absent from labels and predictions).",
        "",
        "| task | macro foreground F | macro F | micro F | pixel accuracy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task, t in report["tasks"].items():
        lines.append(
            f"| {task} | {_fmt(t['macro_foreground_f'])} | {_fmt(t['macro_f'])} | {_fmt(t['micro_f'])} | {_fmt(t['pixel_accuracy'])} |"
        )
    for task, t in report["tasks"].items():
        annotated = (
            f" (annotated on {', '.join(t['annotated_on'])})" if t.get("annotated_on") else ""
        )
        lines += [
            "",
            f"## {task}{annotated}",
            "",
            "| class | support | TP | FP | FN | precision | recall | F | IoU | Dice |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, c in t["per_class"].items():
            label = f"{name} (absent)" if c["absent"] else name
            lines.append(
                f"| {label} | {c['support']} | {c['tp']} | {c['fp']} | {c['fn']} | "
                + " | ".join(_fmt(c[k]) for k in SCORES)
                + " |"
            )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> list[Path]:
    paths = [out / "report.json", out / "report.md"]
    write_atomic(paths[0], json.dumps(report, indent=2) + "\n")
    write_atomic(paths[1], markdown_report(report))
    return paths
