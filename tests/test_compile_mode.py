"""``train.compile``: what each setting chooses, and how ``auto`` measures (issue #20)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from mmseg_heads.engine.batch_size import Shapes
from mmseg_heads.engine.compile_mode import choose_compile, describe, step_timer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _never(mode):
    raise AssertionError(f"no probe expected, timed {mode}")


@pytest.mark.parametrize(
    "setting, device, mode",
    [
        (False, CUDA, None),
        (True, CPU, "default"),
        ("reduce-overhead", CPU, "reduce-overhead"),
        ("max-autotune", CUDA, "max-autotune"),
        ("auto", CPU, None),
    ],
)
def test_a_setting_that_needs_no_measurement_times_nothing(setting, device, mode):
    choice = choose_compile(setting, device, _never)
    assert choice.mode == mode
    assert describe(setting, device) == choice.text()


def test_auto_on_a_cpu_says_why_it_stays_eager():
    assert describe("auto", CPU) == "off (auto: never on CPU, no gain measured there)"
    assert "keeps the fastest" in describe("auto", CUDA)


@pytest.mark.parametrize(
    "times, chosen",
    [
        ({None: 0.010, "default": 0.007, "reduce-overhead": 0.005}, "reduce-overhead"),
        ({None: 0.010, "default": 0.008, "reduce-overhead": float("inf")}, "default"),
        # 3 % faster is inside the noise: eager stays
        ({None: 0.010, "default": 0.0097, "reduce-overhead": 0.0099}, None),
        ({None: 0.010, "default": 0.012, "reduce-overhead": 0.011}, None),
    ],
)
def test_auto_on_cuda_keeps_the_fastest_mode_by_a_margin(times, chosen):
    timed = []

    def seconds(mode):
        timed.append(mode)
        return times[mode]

    choice = choose_compile("auto", CUDA, seconds)
    assert timed == [None, "default", "reduce-overhead"]
    assert choice.mode == chosen
    assert choice.reason.startswith("auto: a step took eager 10.0 ms, default ")


def _model() -> nn.Module:
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.norm = nn.BatchNorm2d(4)
            self.heads = nn.ModuleDict({"a": nn.Conv2d(4, 2, 1), "b": nn.Conv2d(4, 3, 1)})

        def forward(self, images):
            x = nn.functional.dropout(self.norm(self.conv(images["rgb"])), 0.5, self.training)
            return {t: head(x) for t, head in self.heads.items()}

    return Tiny()


def test_the_probe_leaves_the_run_as_it_was_and_a_failing_mode_is_never_chosen(caplog):
    """Weights, BatchNorm statistics and the random stream are untouched by timing; a mode that
    cannot run here measures as infinitely slow, with a warning."""
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = step_timer(model, Shapes({"rgb": 3}, {"a": 2, "b": 3}, 32), 2, CPU, "fp32")
    eager = seconds(None)
    assert 0 < eager < 10
    with caplog.at_level(logging.WARNING, logger="mmseg_heads"):
        assert seconds("no-such-mode") == float("inf")
    assert "train.compile auto: no-such-mode failed to run" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


def test_inspect_says_what_train_compile_will_do(demo_config, capsys):
    from mmseg_heads.cli.main import main

    assert main(["inspect", str(demo_config())]) == 0
    out = capsys.readouterr().out
    expected = describe("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    assert f"torch.compile for training: {expected}" in out


def test_an_unknown_compile_mode_is_one_line_naming_the_choices(demo_config, capsys):
    from mmseg_heads.cli.main import main

    assert main(["train", str(demo_config({"compile": "fast"}))]) == 2
    err = capsys.readouterr().err
    assert "train.compile: 'fast' is not one of auto, default, reduce-overhead, max-autotune" in err
