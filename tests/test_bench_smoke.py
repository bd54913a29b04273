"""Every benchmark runs in ``--quick`` mode and writes the JSON its docs promise.

The scripts run as subprocesses, as a user runs them (``python bench/x.py --quick --json PATH``),
two at a time with one thread each so the whole file stays well under a minute on 2 cores. Quick
mode uses tiny sizes: its numbers are smoke, not measurements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
EXPECTED = {  # script: ratio keys its JSON must hold (every one a positive number)
    "trunk": [
        "per-modality/fp32", "shared/fp32", "early/fp32",
        "per-modality/bf16", "shared/bf16", "early/bf16",
    ],
    "heads": ["+shared/fp32", "+own/fp32", "+shared/bf16", "+own/bf16"],
    "losses": ["share/fp32", "share/bf16", "speedup/C=2", "speedup/C=4", "speedup/C=21"],
    "vs_seed": ["equal_precision_fp32"],
    "loader": ["loader_vs_train/fp32"],
    "roofline": ["ours/fp32", "ours/bf16", "seed VGG16 U-Net/fp32"],
    "scaling": ["modalities=1", "modalities=2", "tasks=2", "own tasks=2"],
    "whatif": ["channels_last/fp32", "fused AdamW/fp32", "base/bf16"],
    "inference_memory": ["peak", "above_baseline"],
    "threads": ["busy/quiet auto"],
}  # fmt: skip
TOP_KEYS = {"benchmark", "quick", "device", "machine", "settings", "rows", "ratios", "targets"}


def _run(name: str, out: Path) -> tuple[subprocess.CompletedProcess, Path]:
    path = out / f"{name}.json"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--threads", "1"]
    done = subprocess.run(
        [*command, "--json", str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    return done, path


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, name, out) for name in EXPECTED}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_quick_run_writes_positive_ratios(quick_runs, name):
    done, path = quick_runs[name]
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(path.read_text())
    assert TOP_KEYS <= set(result), set(result)
    assert result["benchmark"] == name and result["quick"] is True
    missing = [key for key in EXPECTED[name] if key not in result["ratios"]]
    assert not missing, f"missing ratios {missing}; has {sorted(result['ratios'])}"
    bad = {k: v for k, v in result["ratios"].items() if not (isinstance(v, float) and v > 0)}
    assert not bad, bad
    for check in result["targets"].values():
        assert set(check) == {"value", "target", "met"}
    assert "|" in done.stdout  # the Markdown table


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REALDATA = {  # --dataset: (its folder in ../shared/data, its tasks, a case of its train split)
    "myops": ("myops2020", ["anatomy", "scar", "edema"], "Case3001"),
    "brats": ("brats2018", ["whole_tumor", "enhancing", "regions"], "Brats18_2013_3_1"),
}


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", list(REALDATA))
def test_realdata_quick(tmp_path, dataset):
    """bench/realdata.py --quick on each data set (two of its models), then one --steps line and
    --summarize, and a --val-cases fold; skips when the data is absent (it is not redistributed)."""
    folder, tasks, train_case = REALDATA[dataset]
    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA / folder} (it is not redistributed)")
    pytest.importorskip("nibabel")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCH / "realdata.py"), "--dataset", dataset, "--threads", "1"]
    models = ["--models", "ours_early_r34", "joint_unet"]
    path, log = tmp_path / "realdata.json", tmp_path / "steps.jsonl"
    done = subprocess.run(
        [*command, "--quick", *models, "--json", str(path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(path.read_text())["results"]
    assert set(results) == {"ours_early_r34", "joint_unet"}
    for result in results.values():
        assert list(result["dice"]) == tasks and result["steps"] > 0
    assert "|" in done.stdout  # the Markdown table
    steps = [*command, "--steps", "1", "--log", str(log), "--models", "joint_unet"]
    done = subprocess.run(
        [*steps, "--augment", "light", "--crop-foreground", "0.5"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(log.read_text())
    assert list(record["dice"]) == tasks and record["steps"] == 1
    assert record.get("dataset", "myops") == dataset
    summary = subprocess.run(
        [*command, "--summarize", "--log", str(log)], capture_output=True, text=True, env=env
    )
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert "| joint_unet | smp | augment light, crop_foreground 0.5 | 1 | 0 |" in summary.stdout

    # a fold: validate on one case of the spec's train split, train on all the others
    done = subprocess.run(
        [*steps, "--augment", "light", "--crop-foreground", "0.5", "--val-cases", train_case],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    fold = json.loads(log.read_text().splitlines()[-1])
    assert fold["val"] == [train_case] and 0 < fold["val_samples"] != record["val_samples"]
    total = record["train_samples"] + record["val_samples"]
    assert fold["train_samples"] + fold["val_samples"] == total  # every case in one of the two
    summary = subprocess.run(
        [*command, "--summarize", "--log", str(log)], capture_output=True, text=True, env=env
    )
    spec_table, fold_table = summary.stdout.split("Folds")
    assert "| 1 | 0 |" in spec_table and train_case not in spec_table  # folds stay out of it
    row = f"| joint_unet | smp | augment light, crop_foreground 0.5 | 1 | {train_case},spec |"
    assert row in fold_table
    plain = subprocess.run([*steps, "--pipeline", "plain"], capture_output=True, text=True, env=env)
    assert plain.returncode == 0, plain.stderr[-3000:]  # the baseline's centre crops
    assert json.loads(log.read_text().splitlines()[-1])["pipeline"] == "plain"
    unknown = subprocess.run(
        [*steps, "--val-cases", "NoSuchCase"], capture_output=True, text=True, env=env
    )
    assert unknown.returncode != 0 and "no such case ['NoSuchCase']" in unknown.stderr
