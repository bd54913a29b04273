"""The shared data checks (mmseg_heads.data.checks), ``{id}`` patterns (mmseg_heads.data.patterns)
and the dense-range test of label counting (mmseg_heads.data.labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmseg_heads.data.checks import (
    Problem,
    channel_mismatch,
    missing_label_file,
    missing_modality_file,
    size_mismatch,
)
from mmseg_heads.data.labels import dense_minimum, unique_values
from mmseg_heads.data.patterns import (
    ids_from_pattern,
    literal_length,
    match_pattern,
    pattern_regex,
)
from mmseg_heads.data.spec import ModalitySpec, TaskSpec
from mmseg_heads.errors import UserError

PATH = Path("data/thermal/img0004.png")
THERMAL = ModalitySpec(name="thermal", files="thermal/{id}.png", channels=1)


def _task(optional: bool = False) -> TaskSpec:
    return TaskSpec(
        name="shapes", labels="labels/{id}.png", classes=("bg", "fg"), optional=optional
    )


# --- Problem -------------------------------------------------------------------------------------
def test_problem_error_names_the_file_and_keeps_message_and_field():
    error = Problem("it is wrong", "modalities.thermal.files").error(Path("data/demo.yaml"))
    assert isinstance(error, UserError)
    assert (error.message, error.file, error.field) == (
        "it is wrong",
        "data/demo.yaml",
        "modalities.thermal.files",
    )
    assert Problem("x").severity == "error"


# --- missing files -------------------------------------------------------------------------------
def test_missing_modality_file():
    assert missing_modality_file(PATH, "img0004", "thermal", exists=True) is None
    assert missing_modality_file(PATH, "img0004", "thermal", exists=False) == Problem(
        f"file not found: {PATH} (id 'img0004')", "modalities.thermal.files"
    )


def test_missing_label_file_says_how_to_allow_it_unless_asked_not_to():
    path = Path("data/labels/img0008.png")
    assert missing_label_file(path, "img0008", _task(), exists=True) is None
    assert missing_label_file(path, "img0008", _task(), exists=False) == Problem(
        f"label file not found: {path} (id 'img0008'); mark the task `optional: true` if some "
        "samples have no label",
        "tasks.shapes.labels",
    )
    assert missing_label_file(path, "img0008", _task(), exists=False, fix=False) == Problem(
        f"label file not found: {path} (id 'img0008')", "tasks.shapes.labels"
    )


def test_a_missing_label_file_of_an_optional_task_is_no_problem():
    assert missing_label_file(Path("l.png"), "a", _task(optional=True), exists=False) is None


# --- channels ------------------------------------------------------------------------------------
def test_channel_mismatch_with_the_file_as_the_errors_file():
    assert channel_mismatch(PATH, 1, THERMAL) is None
    problem = channel_mismatch(PATH, 3, THERMAL)
    assert problem == Problem(
        "has 3 channels but the data spec says 1", "modalities.thermal.channels"
    )
    assert str(problem.error(PATH)) == (
        f"{PATH}: modalities.thermal.channels: has 3 channels but the data spec says 1"
    )


def test_channel_mismatch_with_the_file_in_the_message():
    assert channel_mismatch(PATH, 1, THERMAL, in_message=True) is None
    assert channel_mismatch(PATH, 3, THERMAL, in_message=True) == Problem(
        f"{PATH} has 3 channels but the spec says 1", "modalities.thermal.channels"
    )


# --- sizes ---------------------------------------------------------------------------------------
def test_files_of_one_size_are_no_problem():
    sizes = [("optical", (64, 64), "modalities.optical.files")]
    assert size_mismatch("img0002", sizes) is None
    assert size_mismatch("img0002", sizes * 3) is None
    assert size_mismatch("img0002", []) is None


def test_size_mismatch_lists_every_file_and_names_the_odd_ones_field():
    sizes = [
        ("optical (img0002.png)", (64, 64), "modalities.optical.files"),
        ("thermal (img0002.png)", (63, 64), "modalities.thermal.files"),
        ("shapes labels (img0002.png)", (64, 64), "tasks.shapes.labels"),
    ]
    assert size_mismatch("img0002", sizes) == Problem(
        "id 'img0002': files differ in size: optical (img0002.png) 64×64, "
        "thermal (img0002.png) 63×64, shapes labels (img0002.png) 64×64",
        "modalities.thermal.files",
    )


def test_size_mismatch_odd_field_is_the_first_differing_from_the_most_common_size():
    sizes = [
        ("a", (2, 2), "a.field"),
        ("b", (3, 3), "b.field"),
        ("c", (3, 3), "c.field"),
    ]
    assert size_mismatch("x", sizes).field == "a.field"
    # A tie: the size seen first counts as the common one.
    assert size_mismatch("x", sizes[:2]).field == "b.field"


def test_size_mismatch_with_other_words():
    sizes = [("a.png", (1, 64, 64), "INPUT"), ("b.png", (1, 60, 60), "INPUT")]
    assert size_mismatch("photo", sizes, what="modalities differ in size (planes×H×W)") == Problem(
        "id 'photo': modalities differ in size (planes×H×W): a.png 1×64×64, b.png 1×60×60", "INPUT"
    )


# --- patterns ------------------------------------------------------------------------------------
def test_pattern_regex_groups():
    match = pattern_regex("{id}/{id}_T2.nii.gz").search("/data/mri/Case1/Case1_T2.nii.gz")
    assert match.group("id") == "Case1"
    assert match.group("rel") == "Case1/Case1_T2.nii.gz"
    # The second {id} repeats the first; dots are literal.
    assert pattern_regex("{id}/{id}_T2.nii.gz").search("Case1/Case2_T2.nii.gz") is None
    assert pattern_regex("images/{id}.png").match("images/a.pngx") is None
    assert pattern_regex("images/{id}.png").match("imagesXa.png") is None
    assert pattern_regex("images/{id}.png").match("images/sub/a.png") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/optical/img1.png", ("img1", Path("data"))),
        ("optical/img1.png", ("img1", Path("."))),
        ("/abs/optical/img1.png", ("img1", Path("/abs"))),
        ("data/thermal/img1.png", None),
        ("data/xoptical/img1.png", None),
    ],
)
def test_match_pattern(path, expected):
    assert match_pattern(Path(path), "optical/{id}.png") == expected


def test_literal_length():
    assert literal_length("optical/{id}.png") == len("optical/.png")
    assert literal_length("{id}/{id}_T2.nii.gz") == len("/_T2.nii.gz")


def test_ids_from_pattern(tmp_path):
    for name in ("a/a_T2.nii.gz", "b/b_T2.nii.gz", "c/d_T2.nii.gz", "e/e_T1.nii.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert ids_from_pattern(tmp_path, "{id}/{id}_T2.nii.gz") == ["a", "b"]
    assert ids_from_pattern(tmp_path, "{id}/*.nii.gz") == []  # glob characters are literal
    assert ids_from_pattern(tmp_path / "nowhere", "{id}.png") == []


# --- label counting ------------------------------------------------------------------------------
def test_dense_minimum():
    assert dense_minimum(np.array([[3, 7], [5, 2221]], dtype=np.uint16)) == 3
    assert dense_minimum(np.array([-5, 4], dtype=np.int16)) == -5
    assert dense_minimum(np.array([0, 1 << 16], dtype=np.int64)) is None  # too wide a range
    assert dense_minimum(np.array([0.0, 1.0])) is None  # not integers
    assert dense_minimum(np.zeros((0, 3), dtype=np.uint8)) is None  # empty


@pytest.mark.parametrize(
    "raw",
    [
        np.array([[7, 3], [3, 9]], dtype=np.uint8),
        np.array([[-2, 40000], [5, -2]], dtype=np.int32),
        np.array([[0, 1 << 20], [5, 0]], dtype=np.int64),
        np.array([[0.5, 1.0], [0.5, np.nan]]),
    ],
)
def test_unique_values_matches_numpy(raw):
    uniques, index_of = unique_values(raw)
    expected, inverse = np.unique(raw, return_inverse=True)
    np.testing.assert_array_equal(uniques, expected)
    assert uniques.dtype == raw.dtype
    np.testing.assert_array_equal(index_of(), inverse.reshape(raw.shape))
