"""Extensions own their options: a loss term, fusion or gate registered after import is one
decorated class, valid in a config, documented by its own fields, and trains; build_model takes a
plain dict."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from torch import nn

from mmseg_heads.config import config_schema, load_config
from mmseg_heads.errors import ConfigError
from mmseg_heads.losses.task_loss import LOSS_TERMS
from mmseg_heads.models.build import build_model
from mmseg_heads.models.fusion import FUSIONS, ConcatFusion
from mmseg_heads.models.gates import GATES
from mmseg_heads.schema import Field, doc_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = "tu-mobilenetv3_small_050"


class SquaredErrorTerm(nn.Module):
    """A throwaway loss term: mean squared error between probabilities and the one-hot target."""

    doc = "squared error of probabilities: a weight, or {weight, power}"
    options = {"power": Field(float, default=2.0, minimum=1.0, doc="exponent of the error")}

    def __init__(self, *, ignore_index: int, power: float = 2.0):
        super().__init__()
        self.ignore_index, self.power = ignore_index, power

    def forward(self, log_probs, target):
        valid = target != self.ignore_index
        onehot = torch.nn.functional.one_hot(
            target.clamp(max=log_probs.shape[1] - 1), log_probs.shape[1]
        )
        error = (log_probs.exp() - onehot.permute(0, 3, 1, 2)).abs() ** self.power
        return error.sum(1)[valid].mean()


class HalfConcatFusion(ConcatFusion):
    """A throwaway fusion: concat, then halve."""

    def forward(self, features, present):
        fused, weights = super().forward(features, present)
        return fused * 0.5, weights


class SigmoidGate(nn.Module):
    """A throwaway gate: alpha from a 1×1 conv of the gated map alone (the signal unused)."""

    def __init__(self, x_channels: int, g_channels: int):
        super().__init__()
        self.alpha = nn.Conv2d(x_channels, 1, kernel_size=1)

    def forward(self, x, g):
        alpha = torch.sigmoid(self.alpha(x))
        return x * alpha, alpha


@pytest.fixture
def registered():
    LOSS_TERMS.register("squared")(SquaredErrorTerm)
    FUSIONS.register("half_concat")(HalfConcatFusion)
    GATES.register("sigmoid")(SigmoidGate)
    try:
        yield
    finally:
        LOSS_TERMS._items.pop("squared")
        FUSIONS._items.pop("half_concat")
        GATES._items.pop("sigmoid")


def _config(tmp_path, demo_spec, **changes) -> object:
    config = {
        "data": str(demo_spec),
        "model": {
            "encoders": {"optical": TINY, "thermal": TINY},
            "decoder_channels": [16, 16, 8, 8, 8],
            "fusion": "half_concat",
            "heads": {"hotspots": {"decoder": "own", "gate": "sigmoid"}},
        },
        "loss": {"shapes": {"squared": {"weight": 1.0, "power": 1.5}, "ce": 1.0}},
        "train": {"epochs": 1, "batch_size": 4, "crop": 32, "workers": 0, "precision": "fp32",
                  "out": str(tmp_path / "run")},
    } | changes  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_term_and_a_fusion_registered_after_import_validate_document_and_train(
    registered, tmp_path, demo_spec
):
    from mmseg_heads.engine.trainer import train

    config = load_config(_config(tmp_path, demo_spec))
    assert config.loss["shapes"]["squared"] == {"weight": 1.0, "power": 1.5}
    assert config.model["heads"]["hotspots"]["gate"] == "sigmoid"
    keys = {row.key for row in doc_rows(config_schema())}
    assert "loss.<name>.squared.power" in keys
    run_dir = train(config, progress=False)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    losses = [
        line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in line
    ]
    assert losses and "squared" in losses[-1]
    gates = [k for k in state["model"] if k.startswith("heads.hotspots.decoder.gates.")]
    assert gates and any(k.endswith("alpha.weight") for k in gates)  # the sigmoid gate's own conv


def test_a_registered_term_s_options_are_checked(registered, tmp_path, demo_spec):
    path = _config(tmp_path, demo_spec, loss={"shapes": {"squared": {"power": 0.5, "pwr": 2}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    fields = {p.field: str(p) for p in info.value.problems}
    assert "below the minimum 1.0" in fields["loss.shapes.squared.power"]
    assert "did you mean 'power'" in fields["loss.shapes.squared.pwr"]


def test_an_unregistered_fusion_or_gate_is_refused_once_it_is_gone(tmp_path, demo_spec):
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, demo_spec, loss={}))
    problems = {p.field: str(p) for p in info.value.problems}
    assert set(problems) == {"model.fusion", "model.heads.hotspots.gate"}
    assert "half_concat" in problems["model.fusion"]
    assert "'sigmoid' is not one of none, attention" in problems["model.heads.hotspots.gate"]


def test_build_model_takes_a_plain_dict_with_defaults_filled():
    model = build_model({"encoders": {"rgb": TINY}}, modalities={"rgb": 3}, tasks={"seg": 4})
    out = model({"rgb": torch.zeros(2, 3, 64, 64)})
    assert out["seg"].shape == (2, 4, 64, 64)
    with pytest.raises(ConfigError) as info:
        build_model({"encoders": {"rgb": TINY}, "depht": 4}, modalities={"rgb": 3}, tasks={"s": 2})
    assert "did you mean 'depth'" in str(info.value)


def tiny_encoder(in_channels: int, depth: int) -> nn.Module:
    """A throwaway encoder: the input, then `depth` stride-2 conv stages of 8, 16, 24 … channels."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [in_channels] + [8 * (i + 1) for i in range(depth)]
            self.stages = nn.ModuleList(
                nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU())
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )

        def forward(self, x):
            features = [x]
            for stage in self.stages:
                features.append(stage(features[-1]))
            return features

    return Tiny()


@pytest.fixture
def tiny_registered():
    from mmseg_heads.models.encoders import ENCODERS

    ENCODERS.register("tiny8")(tiny_encoder)
    try:
        yield
    finally:
        ENCODERS._items.pop("tiny8")


def test_a_registered_encoder_has_its_levels_read_and_trains_from_a_config(
    tiny_registered, tmp_path, demo_spec
):
    from mmseg_heads.engine.trainer import train
    from mmseg_heads.models.encoders import build_encoder

    encoder = build_encoder("tiny8", in_channels=2, depth=4)
    levels = [(lv.stride, lv.channels) for lv in encoder.levels]
    assert levels == [(2, 8), (4, 16), (8, 24), (16, 32)]
    model = {"encoders": {"optical": "tiny8", "thermal": TINY}, "fusion": "concat",
             "decoder_channels": [16, 16, 8, 8, 8]}  # fmt: skip
    config = load_config(_config(tmp_path, demo_spec, model=model, loss={}))
    run_dir = train(config, progress=False)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["trunk.encoders.optical.backbone.stages.0.0.weight"].shape == (8, 3, 3, 3)


def test_a_registered_encoder_loads_local_weights_and_refuses_imagenet(tiny_registered, tmp_path):
    from mmseg_heads.errors import UserError
    from mmseg_heads.models.encoders import build_encoder

    source = build_encoder("tiny8", in_channels=1, depth=3)
    path = tmp_path / "tiny.pt"
    torch.save({"encoder." + k: v for k, v in source.backbone.state_dict().items()}, path)
    loaded = build_encoder("tiny8", in_channels=1, depth=3, pretrained=str(path))
    first = "stages.0.0.weight"
    assert torch.equal(loaded.backbone.state_dict()[first], source.backbone.state_dict()[first])
    with pytest.raises(UserError) as info:
        build_encoder("tiny8", in_channels=1, pretrained="imagenet")
    assert info.value.field == "pretrained" and "no ImageNet weights" in str(info.value)


def test_an_unknown_encoder_suggests_registered_names(tiny_registered):
    from mmseg_heads.models.encoders import encoder_name_problem

    assert encoder_name_problem("tiny8") is None
    assert "did you mean 'tiny8'" in encoder_name_problem("tiny9")
