"""mmseg_heads: multi-task, multi-modality segmentation with one fusion trunk and a head per task.

The Python API (docs/python_api.md), loaded on first use so that ``import mmseg_heads`` stays
fast::

    import mmseg_heads as mh
    config = mh.load_config("configs/demo.yaml")
    run_dir = mh.train(config)
    report = mh.evaluate(run_dir)
    masks = mh.predict_arrays(mh.load_run(run_dir), {"optical": rgb, "thermal": grey})
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_API = {
    "load_config": "mmseg_heads.config",
    "Config": "mmseg_heads.config",
    "build_model": "mmseg_heads.models.build",
    "train": "mmseg_heads.engine.trainer",
    "load_run": "mmseg_heads.engine.run",
    "Run": "mmseg_heads.engine.run",
    "evaluate": "mmseg_heads.engine.evaluate",
    "predict": "mmseg_heads.engine.predict",
    "predict_arrays": "mmseg_heads.engine.predict",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mmseg_heads' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
