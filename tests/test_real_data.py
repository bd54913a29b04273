"""The MyoPS 2020 and BraTS 2018 recipes on the real data in ../shared/data (see its README).

Skips, with the reason, when that folder is absent: the data is not redistributed with the
repository. Label-mapping pixel counts are checked against counts of the raw values computed
directly with nibabel, not through the toolkit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmseg_heads.cli.main import main
from mmseg_heads.config import load_config
from mmseg_heads.data.dataset import MultiModalDataset
from mmseg_heads.data.spec import load_data_spec

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MYOPS, BRATS = SHARED_DATA / "myops2020", SHARED_DATA / "brats2018"
MYOPS_SPEC, BRATS_SPEC = REPO / "data_specs/myops2020.yaml", REPO / "data_specs/brats2018.yaml"
REAL_CONFIGS = ["myops_branches", "myops_early", "myops_fused", "brats_branches", "brats_early"]

nib = pytest.importorskip("nibabel")
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not (MYOPS.is_dir() and BRATS.is_dir()),
        reason=f"real test data not found at {SHARED_DATA} (it is not redistributed)",
    ),
]


def _raw(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _mapped_counts(dataset: MultiModalDataset, case: str) -> dict[str, np.ndarray]:
    """Per task, the class pixel counts over the kept slices of one case, through the dataset."""
    counts = {t.name: np.zeros(t.num_classes, np.int64) for t in dataset.spec.tasks.values()}
    for sample_id in dataset.ids:
        if dataset.spec.case_of(sample_id)[0] != case:
            continue
        labels, _ = dataset.read_labels(sample_id, (0, 0))
        for task, label in labels.items():
            counts[task] += np.bincount(label.ravel(), minlength=len(counts[task]))
    return counts


@pytest.fixture(scope="module")
def myops_train() -> MultiModalDataset:
    return MultiModalDataset(load_data_spec(MYOPS_SPEC), "train")


@pytest.fixture(scope="module")
def brats_val() -> MultiModalDataset:
    return MultiModalDataset(load_data_spec(BRATS_SPEC), "val")


def test_myops_case_mapping_counts_match_raw_values(myops_train):
    raw = _raw(MYOPS / "Case3001" / "Case3001_gd.nii.gz")
    n = {v: int((raw == v).sum()) for v in (0, 200, 500, 600, 1220, 2221)}
    assert sum(n.values()) == raw.size  # no other raw value in the file
    assert [i for i in myops_train.ids if i.startswith("Case3001#")] == [
        f"Case3001#{k}" for k in range(raw.shape[2])
    ]
    counts = _mapped_counts(myops_train, "Case3001")
    myocardium = n[200] + n[1220] + n[2221]
    assert counts["anatomy"].tolist() == [n[0], myocardium, n[500], n[600]]
    assert counts["scar"].tolist() == [raw.size - n[2221], n[2221]]
    assert counts["edema"].tolist() == [raw.size - n[1220] - n[2221], n[1220] + n[2221]]


def test_myops_slice_is_a_normalised_sample(myops_train):
    sample = myops_train[myops_train.ids.index("Case3001#2")]
    shape = _raw(MYOPS / "Case3001" / "Case3001_C0.nii.gz").shape[:2]
    assert sample["size"] == shape
    for modality in ("C0", "LGE", "T2"):
        image = sample["images"][modality]
        assert image.shape == (1, *shape) and bool(image.isfinite().all())
        assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-2


def test_brats_subject_keeps_labelled_slices_and_maps_counts(brats_val):
    raw = _raw(BRATS / "Brats18_CBICA_ABM_1" / "Brats18_CBICA_ABM_1_seg.nii.gz")
    assert raw.dtype == np.uint8
    labelled = np.flatnonzero((raw > 0).any(axis=(0, 1)))
    kept = range(max(0, labelled.min() - 2), min(raw.shape[2], labelled.max() + 3))
    assert np.array_equal(labelled, np.arange(labelled.min(), labelled.max() + 1))  # one run
    assert brats_val.ids == [f"Brats18_CBICA_ABM_1#{k}" for k in kept]
    n = {v: int((raw == v).sum()) for v in (1, 2, 4)}
    pixels = len(kept) * raw.shape[0] * raw.shape[1]
    counts = _mapped_counts(brats_val, "Brats18_CBICA_ABM_1")
    whole = n[1] + n[2] + n[4]
    assert counts["whole_tumor"].tolist() == [pixels - whole, whole]
    assert counts["enhancing"].tolist() == [pixels - n[4], n[4]]
    assert counts["regions"].tolist() == [pixels - whole, n[1], n[2], n[4]]


@pytest.mark.parametrize("spec_path", [MYOPS_SPEC, BRATS_SPEC], ids=lambda p: p.stem)
def test_slices_of_a_case_stay_in_one_split(spec_path):
    spec = load_data_spec(spec_path)
    cases = {}
    for split in spec.splits:
        dataset = MultiModalDataset(spec, split)
        assert {spec.case_of(i)[0] for i in dataset.ids} == set(dataset.cases)
        cases[split] = set(dataset.cases)
    assert cases["train"].isdisjoint(cases["val"])
    assert cases["train"] | cases["val"] == set(spec.all_ids())


def test_inspect_myops_lists_cases_slices_and_class_counts(capsys):
    cases = sorted(p.name for p in MYOPS.iterdir() if p.is_dir())
    assert len(cases) == 25
    depth = {c: _raw(MYOPS / c / f"{c}_gd.nii.gz").shape[2] for c in cases}
    train, val = cases[:20], cases[20:]
    assert main(["inspect", str(MYOPS_SPEC)]) == 0
    out = capsys.readouterr().out
    assert f"train        {sum(depth[c] for c in train)} samples" in out
    assert f"val          {sum(depth[c] for c in val)} samples" in out
    scar = sum(int((_raw(MYOPS / c / f"{c}_gd.nii.gz") == 2221).sum()) for c in val)
    assert f"scar: {sum(depth[c] for c in val)} labelled; pixels: background" in out
    assert f"scar {scar}" in out.split("val ")[1]
    assert out.rstrip().endswith("OK")


@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_real_data_config_validates_and_finds_its_files(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.spec.root.is_dir()
    dataset = MultiModalDataset(config.spec, config.eval["split"])  # stats every file
    assert set(config.model["heads"]) == set(config.spec.tasks)
    assert len(dataset) > 0
