"""``mmseg-heads report RUN_DIR… [--out DIR]``: compare evaluated runs side by side."""

from __future__ import annotations

from pathlib import Path

from mmseg_heads.report.compare import comparison_html, comparison_markdown, load_reports
from mmseg_heads.report.writers import write_atomic


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="compare evaluated runs side by side (per task and class)",
        description="Reads each run's newest report_*/report.json (or a report.json / report folder "
        "given directly) and prints one table per task, runs as columns, best values in bold.",
        epilog="example: mmseg-heads report runs/a runs/b --out comparison",
    )
    p.add_argument("runs", nargs="+", help="run directories, report folders or report.json files")
    p.add_argument("--out", help="also write comparison.md and comparison.html into this folder")


def run(args) -> int:
    reports = load_reports(args.runs)
    text = comparison_markdown(reports)
    print(text)
    if args.out:
        out = Path(args.out)
        write_atomic(out / "comparison.md", text)
        write_atomic(out / "comparison.html", comparison_html(reports))
        print(f"wrote {out / 'comparison.md'}, {out / 'comparison.html'}")
    return 0
