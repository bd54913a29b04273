"""Evaluation reports: JSON schema, ablation, per-sample scores, gates, HTML in a real browser."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml

from mmseg_heads.cli.main import main
from mmseg_heads.data.spec import TaskSpec
from mmseg_heads.engine.evaluate import task_extras
from mmseg_heads.engine.evaluator import run_evaluation
from mmseg_heads.engine.loaders import eval_loader
from mmseg_heads.engine.run import load_run
from mmseg_heads.metrics.confusion import summarize
from mmseg_heads.palette import default_palette
from mmseg_heads.report import html, plots, tables
from mmseg_heads.report.compare import comparison_markdown, comparison_tables
from mmseg_heads.report.schema import REPORT_SCHEMA
from mmseg_heads.report.writers import markdown_report

#: 0.3 M parameters: a training test writes checkpoints of a few MB, not hundreds.
TINY_ENCODER = "tu-mobilenetv3_small_050"

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, demo_spec):
    """A 2-epoch run with attention fusion and a gated head, evaluated with the ablation."""
    tmp = tmp_path_factory.mktemp("report")
    config = {
        "data": str(demo_spec),
        "model": {
            "encoders": {"optical": TINY_ENCODER, "thermal": TINY_ENCODER},
            "fusion": "attention",
            "decoder_channels": [32, 16, 16, 8, 8],
            "heads": {
                "shapes": {"gate": "attention"},
                "hotspots": {"source": "thermal", "decoder": "own"},
            },
        },
        "train": {"epochs": 2, "batch_size": 4, "crop": 64, "workers": 0, "out": str(tmp / "run")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    assert (
        main(["evaluate", str(tmp / "run"), "--ablate-modalities", "--out", str(tmp / "report")])
        == 0
    )
    report = json.loads((tmp / "report" / "report.json").read_text())
    return tmp, report


def test_report_json_matches_its_documented_schema(evaluated):
    _, report = evaluated
    jsonschema.validate(report, REPORT_SCHEMA)
    for summary in report["tasks"].values():  # optional in the schema, always in a new report
        for key in ("macro_iou", "macro_foreground_iou", "macro_dice", "macro_foreground_dice"):
            assert key in summary
    documented = (ROOT / "docs" / "report.md").read_text()
    assert json.dumps(REPORT_SCHEMA, indent=2) in documented
    # The demo spec has no `colors`: each task carries the default palette, one colour per class.
    for task, classes in (("shapes", 4), ("hotspots", 2)):
        assert report["tasks"][task]["palette"] == [list(c) for c in default_palette(classes)]


def test_report_without_a_palette_stays_valid(evaluated):
    """A report.json written before tasks had `palette` still validates."""
    _, report = evaluated
    old = copy.deepcopy(report)
    for summary in old["tasks"].values():
        del summary["palette"]
    jsonschema.validate(old, REPORT_SCHEMA)
    old["tasks"]["shapes"]["palette"] = [[0, 0, 0], [256, 0, 0]]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, REPORT_SCHEMA)


def test_report_without_the_iou_and_dice_means_stays_valid(evaluated):
    """A report.json written before tasks had the Dice means (or the IoU means) still validates."""
    _, report = evaluated
    old = copy.deepcopy(report)
    for summary in old["tasks"].values():
        for key in ("macro_iou", "macro_foreground_iou", "macro_dice", "macro_foreground_dice"):
            del summary[key]
    jsonschema.validate(old, REPORT_SCHEMA)
    old["tasks"]["shapes"]["macro_foreground_dice"] = "high"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, REPORT_SCHEMA)


# --- summary and comparison tables (no run needed) ------------------------------------------

#: Rows = truth, columns = prediction; Dice: bg 10/13, a 6/10, b 8/9; IoU: 5/8, 3/7, 4/5.
HAND_MATRIX = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def _hand_report(beta: float = 2.0) -> dict:
    summary = summarize(HAND_MATRIX, ["background", "a", "b"], beta)
    return {
        "schema_version": 1,
        "split": "val",
        "checkpoint": "run/checkpoints/best.pt",
        "data_spec": "spec.yaml",
        "epoch": 3,
        "samples": 2,
        "heads": {"t": {"decoder": "shared"}},
        "tasks": {"t": summary | {"annotated_on": ["optical"]}},
        "per_sample": {},
        "gates": {},
        "examples": {},
    }


def test_summary_table_shows_miou_and_mean_dice_beside_macro_foreground_f(monkeypatch):
    report = _hand_report(beta=2.0)
    miou = (5 / 8 + 3 / 7 + 4 / 5) / 3
    fg_miou = (3 / 7 + 4 / 5) / 2
    fg_dice = (6 / 10 + 8 / 9) / 2
    fg_f2 = (15 / 28 + 20 / 21) / 2  # F-2 of a and b
    header, rows = tables.summary_table(report)
    assert header == [
        "task", "annotated on", "head", "macro foreground F", "mIoU (with background)",
        "foreground mIoU", "mean foreground Dice", "macro F", "pixel accuracy",
    ]  # fmt: skip
    assert rows[0][:7] == [
        "t", "optical", "decoder: shared", f"{fg_f2:.3f}", f"{miou:.3f}", f"{fg_miou:.3f}",
        f"{fg_dice:.3f}",
    ]  # fmt: skip
    assert rows[0][-1] == f"{12 / 16:.3f}"
    md = markdown_report(report)
    assert "| " + " | ".join(header) + " |" in md
    assert f"| {fg_f2:.3f} | {miou:.3f} | {fg_miou:.3f} | {fg_dice:.3f} |" in md
    assert "background included, as MMSegmentation's mIoU" in md
    monkeypatch.setattr(plots, "available", lambda: False)
    page = html.html_report(report)
    summary = re.search(r'<table class="summary">.*?</table>', page).group(0)
    assert "<th>mIoU (with background)</th>" in summary
    assert f"<td>{fg_f2:.3f}</td><td>{miou:.3f}</td><td>{fg_miou:.3f}</td>" in summary
    assert f"<td>{fg_dice:.3f}</td>" in summary


def test_summary_table_of_an_old_report_shows_a_dash_for_missing_means():
    report = _hand_report()
    for key in ("macro_iou", "macro_foreground_iou", "macro_dice", "macro_foreground_dice"):
        del report["tasks"]["t"][key]
    _, rows = tables.summary_table(report)
    assert rows[0][4:7] == ["—", "—", "—"]


def test_comparison_has_miou_and_dice_rows_and_a_dash_for_an_old_report():
    new, better, old = _hand_report(), _hand_report(), _hand_report()
    better["tasks"]["t"]["macro_iou"] = 0.9
    for key in ("macro_iou", "macro_foreground_dice"):
        del old["tasks"]["t"][key]
    miou = (5 / 8 + 3 / 7 + 4 / 5) / 3
    fg_dice = (6 / 10 + 8 / 9) / 2
    (header, rows), best = comparison_tables({"new": new, "better": better, "old": old})["t"]
    assert header == ["", "new", "better", "old"]
    assert [row[0] for row in rows] == [
        "macro foreground F", "mIoU (with background)", "mean foreground Dice",
        "F background", "F a", "F b",
    ]  # fmt: skip
    assert rows[1][1:] == [f"{miou:.3f}", "0.900", "—"]
    assert rows[2][1:] == [f"{fg_dice:.3f}", f"{fg_dice:.3f}", "—"]
    assert best[1] == 1  # the old report's dash is no candidate
    md = comparison_markdown({"new": new, "better": better, "old": old})
    assert f"| mIoU (with background) | {miou:.3f} | **0.900** | — |" in md
    # one run with the value, one without: nothing to mark
    (_, rows), best = comparison_tables({"new": new, "old": old})["t"]
    assert rows[1][1:] == [f"{miou:.3f}", "—"] and best[1] is None


# --- class colours (no run needed) ----------------------------------------------------------


def test_report_task_entry_carries_the_spec_colors():
    task = TaskSpec(
        name="scar",
        labels="{id}.png",
        classes=("background", "scar", "edema"),
        annotated_on=("LGE",),
        colors={"scar": "#ffff00"},
    )
    assert task_extras(task) == {
        "annotated_on": ["LGE"],
        "palette": [[0, 0, 0], [255, 255, 0], list(default_palette(3)[2])],
    }


def test_report_palette_falls_back_to_the_default_for_old_reports():
    summary = {"classes": ["background", "a", "b"]}
    expected = np.array(default_palette(3)) / 255.0
    np.testing.assert_allclose(plots.report_palette(summary), expected)
    summary["palette"] = [[0, 0, 0], [255, 255, 0], [0, 0, 255]]
    np.testing.assert_allclose(plots.report_palette(summary), np.array(summary["palette"]) / 255)


def test_prediction_layer_has_each_class_colour_and_a_transparent_background():
    palette = np.array([[0, 0, 0], [1.0, 1.0, 0], [0, 0, 1.0]])
    pred = np.array([[0, 1], [2, 1]])
    rgba = plots.prediction_rgba(pred, palette)
    assert rgba.shape == (2, 2, 4)
    np.testing.assert_array_equal(rgba[..., :3], palette[pred])
    np.testing.assert_array_equal(rgba[..., 3], [[0.0, 0.45], [0.45, 0.45]])


def test_report_sample_figures_draw_with_the_task_palette(monkeypatch):
    pytest.importorskip("matplotlib")
    palette = [[0, 0, 0], [255, 255, 0], [0, 128, 255]]
    summary = {"classes": ["background", "a", "b"], "per_class": {}, "palette": palette}
    sample = {
        "images": {"optical": np.zeros((3, 8, 8), np.float32)},
        "pred": {"t": np.ones((8, 8), np.int64)},
        "labels": {"t": np.zeros((8, 8), np.int64)},
    }
    report = {
        "_examples": {"s1": sample},
        "examples": {"t": {"worst": ["s1"], "best": []}},
        "per_sample": {"t": {"s1": 0.5}},
    }
    drawn = []
    monkeypatch.setattr(plots, "_overlay", lambda ax, *arrays: drawn.append(arrays[-1]))
    for name in ("class_scores", "confusion", "training_curves"):
        monkeypatch.setattr(plots, name, lambda *args: None)
    html._task_section("t", summary, report, [], draw=True)
    assert len(drawn) == 1  # one sample, one modality
    np.testing.assert_allclose(drawn[0], np.array(palette) / 255)


def test_ablation_reports_each_modality_through_the_missing_modality_path(evaluated):
    tmp, report = evaluated
    assert set(report["ablation"]) == {"optical", "thermal"}
    assert "attention fusion's softmax runs over the modalities present" in report["ablation_path"]
    config, model, _, _ = load_run(tmp / "run")
    loader = eval_loader(config.spec, "val", 4, 0)
    for modality, per_task in report["ablation"].items():
        independent = run_evaluation(
            model,
            loader,
            config.spec,
            device=torch.device("cpu"),
            precision="fp32",
            missing=(modality,),
        )
        for task, entry in per_task.items():
            assert entry["full"] == report["tasks"][task]["macro_foreground_f"]
            if (modality, task) == ("thermal", "hotspots"):
                continue  # a head on thermal alone: not applicable (below)
            assert entry["delta"] == pytest.approx(entry["macro_foreground_f"] - entry["full"])
            expected = independent.matrices[task].summary()["macro_foreground_f"]
            assert entry["macro_foreground_f"] == pytest.approx(expected, abs=0.02)  # bf16 vs fp32
    # The head on thermal alone has nothing to go on without thermal: its features are zeros, so
    # its logits are the same for every sample, whatever the optical image shows.
    batch = next(iter(loader))
    with torch.no_grad():
        logits = model({"optical": batch["images"]["optical"]})["hotspots"]
    assert batch["images"]["optical"][0].ne(batch["images"]["optical"][1]).any()
    torch.testing.assert_close(logits[0], logits[1])
    # So no score: the constant mask would say nothing about thermal.
    alone = report["ablation"]["thermal"]["hotspots"]
    assert alone["not_applicable"] == "its head branches off thermal alone (no features without it)"
    assert alone["macro_foreground_f"] is None and alone["delta"] is None
    assert all(v["f"] is None for v in alone["per_class"].values())
    assert "not_applicable" not in report["ablation"]["optical"]["hotspots"]
    header, rows = tables.ablation_table(report)
    assert rows[2][header.index("hotspots F (Δ)")] == "n/a (head on thermal alone)"


def test_per_sample_scores_examples_and_gate_weights(evaluated):
    _, report = evaluated
    val_ids = [f"img{i:04d}" for i in range(16, 24)]
    for task in ("shapes", "hotspots"):
        assert sorted(report["per_sample"][task]) == val_ids
        ends = report["examples"][task]
        assert set(ends["worst"]) | set(ends["best"]) <= set(val_ids)
        scores = report["per_sample"][task]
        if ends["worst"] and ends["best"]:
            assert max(scores[i] for i in ends["worst"]) <= min(scores[i] for i in ends["best"])
    shapes_weights = report["gates"]["heads"]["shapes"]
    assert set(shapes_weights) == {"optical", "thermal"}
    assert sum(shapes_weights.values()) == pytest.approx(1.0, abs=1e-4)
    assert "hotspots" not in report["gates"]["heads"]  # no gate on it
    assert sum(report["gates"]["fusion"].values()) == pytest.approx(1.0, abs=1e-4)


def test_markdown_and_html_hold_every_table(evaluated):
    tmp, report = evaluated
    md = (tmp / "report" / "report.md").read_text()
    assert "## shapes (annotated on optical)" in md and "## Modality ablation" in md
    assert "| optical |" in md and "Which modality each task relies on" in md
    page = (tmp / "report" / "report.html").read_text()
    for task in ("shapes", "hotspots"):
        assert f'data-task="{task}"' in page
    # per task: class bars, confusion, curves, overlays; plus gate heatmap and ablation chart
    assert page.count("<img ") == 2 * 4 + 2
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing fetched from outside


def _browser() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_html_report_renders_in_a_headless_browser(evaluated):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium when it can)")
    tmp, _ = evaluated
    page = (tmp / "report" / "report.html").resolve().as_uri()
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    )
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, dom.stderr[-2000:]
    assert int(loaded.group(1)) == int(loaded.group(2)) == 10
    for task in ("shapes", "hotspots"):
        assert f'data-task="{task}"' in dom.stdout
    shot = tmp / "report.png"
    subprocess.run(
        [browser, *flags, "--window-size=1200,3000", f"--screenshot={shot}", page],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_report_command_compares_runs_and_marks_the_best(evaluated, tmp_path, capsys):
    tmp, report = evaluated
    better = json.loads(json.dumps(report))
    better["tasks"]["shapes"]["macro_foreground_f"] = 0.999
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps(better))
    code = main(
        ["report", str(tmp / "report"), str(tmp_path / "other"), "--out", str(tmp_path / "cmp")]
    )
    out = capsys.readouterr().out
    assert code == 0
    row = next(
        line
        for line in out.splitlines()
        if line.startswith("| macro foreground F") and "0.999" in line
    )
    assert "**0.999**" in row
    assert any(line.startswith("| mIoU (with background) |") for line in out.splitlines())
    assert (tmp_path / "cmp" / "comparison.html").read_text().count("<strong>") >= 1


def test_report_command_without_a_report_exits_2(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "no report.json; run `mmseg-heads evaluate" in capsys.readouterr().err


# --- per-case scores of volumes (no run needed) ---------------------------------------------

#: Three cases of a volume data set: "a" everywhere; "b" missed in Case9, absent from Case10.
PER_CASE_SCORES = {
    "Case10": {
        "a": {"dice": 0.8, "hd95": 3.0},
        "b": {"dice": None, "hd95": None, "reason": "empty in label and prediction"},
    },
    "Case2": {"a": {"dice": 0.6, "hd95": 2.0}, "b": {"dice": 0.9, "hd95": 1.5}},
    "Case9": {
        "a": {"dice": 0.7, "hd95": 4.0},
        "b": {"dice": 0.0, "hd95": None, "reason": "empty prediction"},
    },
}


def _volume_report() -> dict:
    """The hand report with `per_case`; its summary is worked by hand from PER_CASE_SCORES:
    a: Dice 0.6, 0.7, 0.8 -> 0.7 ± 0.1 (sample sd: sqrt((0.01 + 0 + 0.01) / 2)), n 3;
       HD95 2, 4, 3 mm -> 3 ± 1, n 3;
    b: Dice 0.9, 0.0 (Case10 undefined) -> 0.45 ± sqrt(0.405) = 0.636, n 2; HD95 1.5 alone, n 1.
    """
    report = _hand_report()
    report["per_case"] = {
        "t": {
            "unit": "mm",
            "cases": copy.deepcopy(PER_CASE_SCORES),
            "summary": {
                "a": {
                    "dice": {"mean": 0.7, "sd": 0.1, "n": 3},
                    "hd95": {"mean": 3.0, "sd": 1.0, "n": 3},
                },
                "b": {
                    "dice": {"mean": 0.45, "sd": 0.405**0.5, "n": 2},
                    "hd95": {"mean": 1.5, "sd": None, "n": 1},
                },
            },
        }
    }
    return report


def test_volume_report_summary_is_what_summarize_cases_gives():
    from mmseg_heads.metrics.per_case import summarize_cases

    computed = summarize_cases(PER_CASE_SCORES)
    for name, scores in _volume_report()["per_case"]["t"]["summary"].items():
        for key, stat in scores.items():
            assert computed[name][key]["n"] == stat["n"]
            assert computed[name][key]["mean"] == pytest.approx(stat["mean"])
            assert computed[name][key]["sd"] == pytest.approx(stat["sd"])


def test_per_case_summary_table_reads_mean_sd_n():
    header, rows = tables.per_case_summary_table(_volume_report())
    assert header == [
        "task", "class", "Dice per case (mean ± sd, n)", "HD95 per case (mean ± sd, n) mm",
    ]  # fmt: skip
    assert rows == [
        ["t", "a", "0.700 ± 0.100 (3)", "3.000 ± 1.000 (3)"],
        ["t", "b", "0.450 ± 0.636 (2)", "1.500 (1)"],  # one case: no sd
    ]
    assert tables.per_case_summary_table(_hand_report()) is None  # 2-D data, older reports
    no_case = _volume_report()
    no_case["per_case"]["t"]["summary"]["b"]["hd95"] = {"mean": None, "sd": None, "n": 0}
    assert tables.per_case_summary_table(no_case)[1][1][3] == "—"


def test_per_case_summary_table_says_the_unit_of_each_task_when_they_differ():
    report = _volume_report()
    report["per_case"]["u"] = copy.deepcopy(report["per_case"]["t"]) | {"unit": "voxel"}
    header, rows = tables.per_case_summary_table(report)
    assert header[3] == "HD95 per case (mean ± sd, n)"
    assert rows[0][3] == "3.000 ± 1.000 mm (3)" and rows[2][3] == "3.000 ± 1.000 voxel (3)"


def test_per_case_table_has_a_row_per_case_and_dashes_where_undefined():
    report = _volume_report()
    header, rows = tables.per_case_table(report, "t")
    assert header == ["case", "Dice a", "HD95 a (mm)", "Dice b", "HD95 b (mm)"]
    assert rows == [
        ["Case2", "0.600", "2.000", "0.900", "1.500"],
        ["Case9", "0.700", "4.000", "0.000", "—"],
        ["Case10", "0.800", "3.000", "—", "—"],
    ]
    reasons = tables.per_case_reasons(report, "t")
    assert reasons[1] == [None, None, None, None, "empty prediction"]
    assert reasons[2][3:] == ["empty in label and prediction"] * 2
    report["per_case"]["t"]["unit"] = "voxel"
    assert tables.per_case_table(report, "t")[0][2] == "HD95 a (voxel)"


def test_markdown_has_the_per_case_section_only_for_volumes():
    md = markdown_report(_volume_report())
    assert "## Per-case scores (volumes)" in md
    assert "| t | a | 0.700 ± 0.100 (3) | 3.000 ± 1.000 (3) |" in md
    assert "### t\n\n| case | Dice a | HD95 a (mm) | Dice b | HD95 b (mm) |" in md
    assert "| Case10 | 0.800 | 3.000 | — | — |" in md
    # after the per-class tables
    assert md.index("## t (annotated on optical)") < md.index("## Per-case scores (volumes)")
    assert "Per-case" not in markdown_report(_hand_report())


def test_html_has_the_per_case_section_and_a_box_plot(monkeypatch):
    report = _volume_report()
    monkeypatch.setattr(plots, "available", lambda: False)
    page = html.html_report(report)
    assert "<h2>Per-case scores (volumes)</h2>" in page
    assert "<td>0.700 ± 0.100 (3)</td>" in page
    assert '<td title="empty prediction">—</td>' in page
    assert "per-case Dice and HD95" not in page  # no figure without matplotlib
    assert "Per-case" not in html.html_report(_hand_report())
    monkeypatch.undo()
    if not plots.available():
        pytest.skip("matplotlib (the report extra) is not installed")
    for name in ("class_scores", "confusion"):
        monkeypatch.setattr(plots, name, lambda *args: None)
    page = html.html_report(report)
    section = re.search(r'<section id="per-case">.*?</section>', page, re.S).group(0)
    assert re.search(r'<img alt="t per-case Dice and HD95" src="data:image/png;base64,', section)


def test_per_case_boxplot_draws_only_defined_values(monkeypatch):
    pytest.importorskip("matplotlib")
    report = _volume_report()
    png = plots.per_case_boxplot(report, "t")
    assert png.startswith(b"\x89PNG")
    drawn = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.boxplot
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "boxplot",
        lambda self, data, **kw: drawn.append((data, kw["positions"])) or real(self, data, **kw),
    )
    # b has no defined HD95 other than Case2's; with that gone, b's HD95 box is skipped.
    report["per_case"]["t"]["cases"]["Case2"]["b"]["hd95"] = None
    assert plots.per_case_boxplot(report, "t").startswith(b"\x89PNG")
    dice, hd95 = drawn
    assert dice == ([[0.8, 0.6, 0.7], [0.9, 0.0]], [0, 1])
    assert hd95 == ([[3.0, 2.0, 4.0]], [0])
    for scores in report["per_case"]["t"]["cases"].values():
        for cell in scores.values():
            cell.update(dice=None, hd95=None)
    assert plots.per_case_boxplot(report, "t") is None


def test_comparison_has_per_case_rows_and_a_dash_for_an_old_report():
    new, better, old = _volume_report(), _volume_report(), _hand_report()
    summary = better["per_case"]["t"]["summary"]
    summary["a"]["dice"]["mean"], summary["a"]["hd95"]["mean"] = 0.75, 2.5  # better: higher, lower
    (header, rows), best = comparison_tables({"new": new, "better": better, "old": old})["t"]
    labels = [row[0] for row in rows]
    assert labels == [
        "macro foreground F", "mIoU (with background)", "mean foreground Dice",
        "case Dice a (mean)", "case Dice b (mean)",
        "case HD95 a (mean, mm)", "case HD95 b (mean, mm)",
        "F background", "F a", "F b",
    ]  # fmt: skip
    assert rows[3][1:] == ["0.700", "0.750", "—"] and best[3] == 1  # Dice: highest
    assert rows[5][1:] == ["3.000", "2.500", "—"] and best[5] == 1  # HD95: lowest
    summary["a"]["hd95"]["mean"] = 3.5
    (_, rows), best = comparison_tables({"new": new, "better": better, "old": old})["t"]
    assert rows[5][1:] == ["3.000", "3.500", "—"] and best[5] == 0
    md = comparison_markdown({"new": new, "better": better, "old": old})
    assert "| case HD95 a (mean, mm) | **3.000** | 3.500 | — |" in md
    # 2-D reports only: no per-case rows
    (_, rows), _ = comparison_tables({"a": _hand_report(), "b": _hand_report()})["t"]
    assert not any(row[0].startswith("case ") for row in rows)


def test_comparison_marks_no_best_hd95_between_millimetres_and_voxels():
    mm, voxel = _volume_report(), _volume_report()
    voxel["per_case"]["t"]["unit"] = "voxel"
    (_, rows), best = comparison_tables({"mm": mm, "voxel": voxel})["t"]
    row = next(i for i, r in enumerate(rows) if r[0] == "case HD95 a (mean)")
    assert rows[row][1:] == ["3.000 mm", "3.000 voxel"] and best[row] is None


def test_report_schema_takes_per_case_as_optional():
    report, without = _volume_report(), _hand_report()
    for r in (report, without):
        r["gates"] = {"heads": {}, "fusion": {}}  # the hand report leaves the gates empty
    jsonschema.validate(report, REPORT_SCHEMA)
    jsonschema.validate(without, REPORT_SCHEMA)
    for path, value in (
        (("unit",), "cm"),
        (("cases", "Case9", "b", "reason"), 3),  # a reason is text
        (("summary", "a", "dice", "n"), 1.5),
    ):
        broken = copy.deepcopy(report)
        target = broken["per_case"]["t"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, REPORT_SCHEMA)
    del report["per_case"]["t"]["summary"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, REPORT_SCHEMA)


def test_nesting_table_and_title_line_say_how_the_masks_were_made():
    report = _hand_report()
    assert tables.nesting_table(report) is None
    assert tables.inference_text(report) == "whole images; no test-time flips"  # old reports
    without = summarize(torch.tensor([[5, 1, 0], [2, 2, 2], [0, 1, 3]]), ["background", "a", "b"])
    report["with_nesting"] = {"t": without}
    report["inference"] = {"window": None, "overlap": None, "tta": ["hflip"], "nesting": "on"}
    report["missing_modalities"] = ["thermal"]
    header, rows = tables.nesting_table(report)
    plain, nested = report["tasks"]["t"]["macro_foreground_f"], without["macro_foreground_f"]
    assert rows == [["t", f"{plain:.3f}", f"{nested:.3f}", f"{nested - plain:+.3f}"]]
    text = tables.inference_text(report)
    assert text == (
        "whole images; test-time flips hflip (2 passes averaged); nested as the data spec's "
        "`inside` says; without thermal (not in the data spec: the model's missing-modality path)"
    )
    markdown = markdown_report(report)
    assert "## Nesting" in markdown and text in markdown
    assert "<h2>Nesting</h2>" in html.html_report(report)


@pytest.mark.parametrize(
    "encoders,expected,absent",
    [
        (
            {"C0+LGE+T2": "resnet34"},
            "All modalities share one encoder (C0+LGE+T2, early fusion): the missing modality's "
            "channels are zeros",
            "its encoder does not run",
        ),
        (
            {"C0": "resnet18", "LGE": "resnet18", "T2": "resnet18"},
            "its encoder does not run",
            "stacked",
        ),
        (
            {"C0+LGE": "resnet18", "T2": "resnet18"},
            "(for a modality with an encoder of its own). In the stacked group C0+LGE (early fusion)",
            "All modalities share",
        ),
    ],
)
def test_the_ablation_note_says_one_true_thing_per_encoder_layout(encoders, expected, absent):
    from types import SimpleNamespace

    from mmseg_heads.engine.evaluate import ablation_path

    config = SimpleNamespace(
        model={"fusion": "concat", "encoders": encoders},
        spec=SimpleNamespace(modalities={"C0": 1, "LGE": 1, "T2": 1}),
    )
    note = ablation_path(config)
    assert expected in note and absent not in note


def test_one_encoder_has_no_attention_table():
    report = _hand_report()
    report["gates"] = {"heads": {"t": {"C0+LGE+T2": 1.0}}, "fusion": {}}
    report["encoder_groups"] = {"C0+LGE+T2": ["C0", "LGE", "T2"]}
    assert tables.gate_table(report) is None
    report["encoder_groups"] = {"C0": ["C0"], "T2": ["T2"]}
    report["gates"] = {"heads": {"t": {"C0": 0.3, "T2": 0.7}}, "fusion": {}}
    assert tables.gate_table(report)[1] == [["t", "0.300", "0.700"]]


def test_validations_inside_epochs_fall_between_them_on_the_curves():
    from mmseg_heads.report.plots import validation_epochs

    train = [{"epoch": 1, "step": 4}, {"epoch": 2, "step": 7}]
    val = [{"epoch": 1, "step": 3}, {"epoch": 2, "step": 6}, {"epoch": 2, "step": 7}]
    assert validation_epochs(train, val) == [0.75, pytest.approx(1 + 2 / 3), 2.0]
    once_an_epoch = [{"epoch": 1, "step": 4}, {"epoch": 2, "step": 7}]
    assert validation_epochs(train, once_an_epoch) == [1.0, 2.0]
    assert validation_epochs([{"epoch": 1}], [{"epoch": 1}]) == [1]  # lines without steps


def test_html_examples_are_the_evaluations_own_masks_segmented_once(evaluated, monkeypatch):
    from mmseg_heads.engine import evaluator
    from mmseg_heads.engine.evaluate import evaluate

    tmp, _ = evaluated
    segmented = []
    segment_planes = evaluator.segment_planes

    def counting(model, images, *args, **kwargs):
        segmented.append(len(next(iter(images.values()))))
        return segment_planes(model, images, *args, **kwargs)

    monkeypatch.setattr(evaluator, "segment_planes", counting)
    report = evaluate(tmp / "run", with_examples=True)
    # every sample segmented once: none a second time for the page's examples
    assert sum(segmented) == report["samples"] == 8
    ids = sorted({i for ends in report["examples"].values() for g in ends.values() for i in g})
    assert ids and sorted(report["_examples"]) == ids
    for task, scores in report["per_sample"].items():
        classes = len(report["tasks"][task]["classes"])
        for sample_id in ids:
            arrays = report["_examples"][sample_id]
            pred = torch.from_numpy(arrays["pred"][task])[None]
            label = torch.from_numpy(arrays["labels"][task])[None]
            assert arrays["images"]["optical"].shape[-2:] == label.shape[-2:]
            # the kept mask is the one scored
            (score,) = evaluator.sample_scores(pred, label, classes)
            assert score == pytest.approx(scores[sample_id], abs=1e-6) or score is scores[sample_id]
