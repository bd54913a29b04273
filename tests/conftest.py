"""Shared fixtures. Tests never touch the network: a stray weight download fails in milliseconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from mmseg_heads.data.synthetic import write_demo_dataset  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The scan cache of the test session goes to a temporary folder, never to ~/.cache."""
    previous = os.environ.get("MMSEG_HEADS_CACHE_DIR")
    os.environ["MMSEG_HEADS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("MMSEG_HEADS_CACHE_DIR", None)
    else:
        os.environ["MMSEG_HEADS_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def demo_spec(tmp_path_factory) -> Path:
    """A small demo data set (16 train, 8 val, 64×64) written once per session; returns its spec."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", train=16, val=8, size=64)


@pytest.fixture
def demo_config(tmp_path, demo_spec):
    """Writes ``tmp_path/config.yaml`` over the demo spec (two resnet18s; run dir
    ``tmp_path/run``) with ``train`` merged into ``{crop: 32, batch_size: 4}``; returns its path."""

    def write(train: dict | None = None) -> Path:
        config = {
            "data": str(demo_spec),
            "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}},
            "train": {"crop": 32, "batch_size": 4, "out": str(tmp_path / "run")} | (train or {}),
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write
