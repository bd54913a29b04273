"""Diagnostic variants of ours_early_r50_nogate for bench/realdata.py (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/, for realdata

import realdata  # noqa: E402
from segmentation_models_pytorch.base.initialization import (  # noqa: E402
    initialize_decoder,
    initialize_head,
)
from torch import nn  # noqa: E402

from mmseg_heads.models.fusion import FUSIONS  # noqa: E402


@FUSIONS.register("identity")
class IdentityFusion(nn.Module):
    missing_modality = "x"

    def __init__(self, in_channels, out_channels):
        super().__init__()
        assert len(in_channels) == 1
        self.source = next(iter(in_channels))

    def forward(self, features, present):
        f = features[self.source]
        return f * present[self.source].to(f.dtype).view(-1, 1, 1, 1), None


base = realdata.OURS["ours_early_r50_nogate"]
realdata.OURS["r50_pass"] = base | {"fusion": "identity"}
realdata.OURS["r50_smpinit"] = dict(base)
realdata.OURS["r50_pass_smpinit"] = base | {"fusion": "identity"}
realdata.OURS["r34_pass"] = realdata.OURS["ours_early_r34_nogate"] | {"fusion": "identity"}
realdata.OURS["r34_pass_smpinit"] = realdata.OURS["r34_pass"]
realdata.OURS["r34_smpinit"] = realdata.OURS["ours_early_r34_nogate"]

_build = realdata.build_named


def build_named(name, task_classes):
    model = _build(name, task_classes)
    if "smpinit" in name:
        initialize_decoder(model.decoder)
        initialize_decoder(model.trunk.fusions)
        for head in model.heads.values():
            initialize_head(head.classify)
    return model


realdata.build_named = build_named
if __name__ == "__main__":
    realdata.main()
