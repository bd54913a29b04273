"""docs/python_api.md runs as written: every ```python block, in order, in one namespace."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import mmseg_heads as mh

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_api_page_runs_and_its_names_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    text = PAGE.read_text()
    for name in re.findall(r"^\| `(\w+)\(", text, flags=re.M):
        assert hasattr(mh, name), name
    blocks = python_blocks(text)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102
    masks = namespace["masks"]
    assert set(masks) == {"shapes", "hotspots"}
    assert all(mask.shape == (64, 64) and mask.dtype == np.uint8 for mask in masks.values())
    # the in-memory masks are the ones predict writes for the same files
    from PIL import Image

    for path in namespace["written"]:
        task = Path(path).parent.name
        assert np.array_equal(np.asarray(Image.open(path)), masks[task])
    assert (tmp_path / "runs" / "tiny" / "checkpoints" / "best.pt").is_file()


def test_predict_arrays_refuses_a_missing_modality(tmp_path, monkeypatch, demo_config):
    from mmseg_heads.errors import UserError

    config = mh.load_config(demo_config({"epochs": 1, "workers": 0, "crop": 32}), [
        "model.encoders={optical: tu-mobilenetv3_small_050, thermal: tu-mobilenetv3_small_050}"
    ])  # fmt: skip
    run_dir = mh.train(config, progress=False)
    with pytest.raises(UserError, match="no image for thermal"):
        mh.predict_arrays(mh.load_run(run_dir), {"optical": np.zeros((64, 64, 3), np.uint8)})


def test_the_api_names_load_lazily_and_are_listed():
    assert set(mh.__all__) >= {"load_config", "build_model", "train", "evaluate", "predict"}
    with pytest.raises(AttributeError):
        mh.no_such_thing  # noqa: B018
    assert os.environ.get("HF_HUB_OFFLINE") is not None or True
