"""Sliding-window inference and test-time flips (engine/inference.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmseg_heads.engine.inference import (
    WHOLE_IMAGE,
    Inference,
    flip_variants,
    gaussian_weights,
    probabilities,
    segment_planes,
    window_starts,
)
from mmseg_heads.errors import UserError

CPU = torch.device("cpu")


class Pointwise(nn.Module):
    """Logits from a fixed 1×1 convolution: each pixel's classes depend on that pixel alone, so
    windows, padding and flips cannot change them."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, classes, 1)
        self.trunk = type("Trunk", (), {"max_stride": 8})()

    def forward(self, images, return_gates=False):
        logits = {"task": self.conv(images["a"])}
        return (logits, {"heads": {}, "fusion": {}}) if return_gates else logits


class Contextual(nn.Module):
    """Logits that depend on a 5×5 neighbourhood and on the column: windows and flips matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(2, 3, 5, padding=2)
        self.trunk = type("Trunk", (), {"max_stride": 8})()

    def forward(self, images, return_gates=False):
        x = images["a"]
        column = torch.linspace(-1, 1, x.shape[-1]).expand_as(x[:, :1])
        logits = {"task": self.conv(x) + torch.cat([column, -column, 0 * column], 1)}
        return (logits, {"heads": {}, "fusion": {}}) if return_gates else logits


def _image(n=2, h=40, w=56, seed=0):
    return {"a": torch.randn(n, 2, h, w, generator=torch.Generator().manual_seed(seed))}


def test_window_starts_cover_the_image_evenly_and_end_at_its_edge():
    assert window_starts(32, 32, 0.5) == [0]
    assert window_starts(20, 32, 0.5) == [0]
    assert window_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]  # ceil(68/16)+1 = 6 windows
    assert window_starts(64, 32, 0.0) == [0, 32]
    starts = window_starts(1000, 128, 0.25)
    assert starts[0] == 0 and starts[-1] == 1000 - 128
    assert (
        max(b - a for a, b in zip(starts[:-1], starts[1:], strict=True)) <= 96
    )  # never more than the step


def test_gaussian_weights_peak_in_the_middle_and_are_never_zero():
    w = gaussian_weights(33, 17, CPU)
    assert w.shape == (33, 17)
    assert w[16, 8] == pytest.approx(1.0)
    assert w.min() > 0 and w.argmax() == 16 * 17 + 8
    sigma = 33 / 8  # σ = N/8: the edge row, 16 px from the centre, weighs exp(-16²/2σ²)
    assert w[0, 8].item() == pytest.approx(math.exp(-(16**2) / (2 * sigma**2)), rel=1e-5)


def test_flip_variants_are_every_combination_identity_first():
    assert flip_variants(()) == [()]
    assert flip_variants(("hflip",)) == [(), (-1,)]
    assert flip_variants(("hflip", "vflip")) == [(), (-1,), (-2,), (-1, -2)]


def test_windows_change_nothing_for_a_pointwise_model():
    model, images = Pointwise(), _image()
    whole = segment_planes(model, images, WHOLE_IMAGE, precision="fp32", device=CPU)
    for options in (Inference(16, 0.5), Inference(24, 0.0), Inference(16, 0.75, ("hflip",))):
        windowed = segment_planes(
            model, images, options, precision="fp32", device=CPU, batch_size=3
        )
        assert torch.equal(windowed["task"], whole["task"]), options
    assert whole["task"].shape == (2, 40, 56)


def test_an_image_inside_one_window_is_segmented_whole():
    model, images = Contextual(), _image()
    whole = segment_planes(model, images, WHOLE_IMAGE, precision="fp32", device=CPU)
    for window in (56, 64):  # fits once the window is at least the image's longer side
        one = segment_planes(model, images, Inference(window), precision="fp32", device=CPU)
        assert torch.equal(one["task"], whole["task"])


def _reference_sliding_window(model, image, window, overlap, tta):
    """The textbook loop: every window's weighted probabilities into one full-size sum."""
    _, h, w = image["a"].shape
    sums = torch.zeros(3, h, w)
    weights = gaussian_weights(min(window, h), min(window, w), CPU)
    for y in window_starts(h, min(window, h), overlap):
        for x in window_starts(w, min(window, w), overlap):
            crop = {"a": image["a"][None, :, y : y + weights.shape[0], x : x + weights.shape[1]]}
            p = probabilities(model, crop, flip_variants(tta), "fp32", CPU)["task"][0]
            sums[:, y : y + weights.shape[0], x : x + weights.shape[1]] += p * weights
    return sums.argmax(0)


@pytest.mark.parametrize(
    "window,overlap,tta",
    [(16, 0.5, ()), (24, 0.3, ()), (16, 0.5, ("hflip", "vflip")), (32, 0.0, ("vflip",))],
)
def test_row_by_row_blending_equals_the_full_size_sum(window, overlap, tta):
    """Freeing finished rows early must not change a pixel: compare with the full-size sum."""
    model, images = Contextual(), _image(n=2, h=40, w=56)
    out = segment_planes(
        model, images, Inference(window, overlap, tta), precision="fp32", device=CPU, batch_size=2
    )
    for n in range(2):
        expected = _reference_sliding_window(model, {"a": images["a"][n]}, window, overlap, tta)
        assert torch.equal(out["task"][n], expected)
    # and windows do change this model's answer somewhere (the test can fail)
    whole = segment_planes(model, images, WHOLE_IMAGE, precision="fp32", device=CPU)
    assert not torch.equal(whole["task"], out["task"]) or tta


def test_tta_averages_probabilities_of_the_flipped_images():
    model, images = Contextual(), _image(n=1)
    out = segment_planes(model, images, Inference(tta=("hflip",)), precision="fp32", device=CPU)
    plain = model(images)["task"].softmax(1)
    mirrored = model({"a": images["a"].flip(-1)})["task"].softmax(1).flip(-1)
    assert torch.equal(out["task"], ((plain + mirrored) / 2).argmax(1))
    assert not torch.equal(out["task"], plain.argmax(1))  # the column term makes flips matter


def test_tta_of_a_flip_equivariant_model_changes_nothing():
    model, images = Pointwise(), _image()
    plain = segment_planes(model, images, WHOLE_IMAGE, precision="fp32", device=CPU)
    flipped = segment_planes(
        model, images, Inference(tta=("hflip", "vflip")), precision="fp32", device=CPU
    )
    assert torch.equal(plain["task"], flipped["task"])


def test_gates_are_reported_for_every_forward_pass():
    calls = []
    segment_planes(
        Pointwise(),
        _image(n=1, h=40, w=56),
        Inference(16, 0.5, ("hflip",)),
        precision="fp32",
        device=CPU,
        batch_size=100,
        on_gates=calls.append,
    )
    # rows: window_starts(40,16,.5) = 4, columns: 6 in one batch, 2 flips each
    assert len(calls) == 4 * 2


def test_overrides_are_checked_and_name_their_flag():
    base = Inference.from_eval({"window": None, "overlap": 0.5, "tta": [], "nesting": "off"})
    assert base == WHOLE_IMAGE
    assert base.with_overrides(64, None, ("vflip", "vflip")) == Inference(64, 0.5, ("vflip",))
    assert base.with_overrides(tta=()).tta == ()
    for kwargs, flag, message in [  # the config schema's eval fields check them
        ({"window": 0}, "--window", "0 is below the minimum 1"),
        ({"overlap": 1.0}, "--overlap", "must be below 1"),
        ({"overlap": -0.5}, "--overlap", "-0.5 is below the minimum 0.0"),
        ({"tta": ("rot90",)}, "--tta", "'rot90' is not one of hflip, vflip"),
    ]:
        with pytest.raises(UserError) as error:
            base.with_overrides(**kwargs)
        assert (error.value.field, error.value.message) == (flag, message)
    with pytest.raises(
        UserError,
        match=r"48 is not a multiple of the model's largest stride 32 "
        r"\(try 64\)",
    ) as error:
        Inference(48).check(32, field="--window")
    assert error.value.field == "--window"
    Inference(64).check(32)  # a multiple passes
    assert Inference(64, 0.25, ("hflip",)).describe() == {
        "window": 64,
        "overlap": 0.25,
        "tta": ["hflip"],
        "nesting": "off",
    }
    assert WHOLE_IMAGE.describe() == {"window": None, "overlap": None, "tta": [], "nesting": "off"}
    rules = (("b", (("a", (1,)),)),)
    assert Inference(nesting="both", nesting_rules=rules).describe()["nesting"] == "both"
    assert Inference(nesting="both").describe()["nesting"] == "off"  # no rule: nothing nested


def test_config_checks_the_inference_options(demo_config, capsys, tmp_path):
    from mmseg_heads.cli.main import main

    config = demo_config({"epochs": 1})
    for override, message in [
        ("eval.overlap=1.0", "eval.overlap: must be below 1"),
        ("eval.tta=[hflip,hflip]", "eval.tta: names a flip twice"),
        ("eval.tta=[hflp]", "did you mean 'hflip'?"),
        ("eval.window=48", "eval.window: 48 is not a multiple of the model's largest stride 32"),
    ]:
        assert main(["train", str(config), override]) == 2, override
        err = capsys.readouterr().err
        assert message in err and str(config) in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained


# --- nesting -----------------------------------------------------------------------------------


def test_nesting_keeps_a_task_inside_its_parents_nested_prediction():
    from mmseg_heads.engine.inference import apply_nesting

    anatomy = torch.tensor([[[0, 1, 1, 2]]])  # 1 = myocardium
    edema = torch.tensor([[[1, 1, 0, 1]]])  # outside the myocardium at 0 and 3
    scar = torch.tensor([[[1, 1, 1, 1]]])
    rules = (("edema", (("anatomy", (1,)),)), ("scar", (("edema", (1,)),)))
    out = apply_nesting({"anatomy": anatomy, "edema": edema, "scar": scar}, rules)
    assert out["anatomy"].tolist() == anatomy.tolist()
    assert out["edema"].tolist() == [[[0, 1, 0, 0]]]
    assert out["scar"].tolist() == [[[0, 1, 0, 0]]]  # inside the *nested* edema
    assert edema.tolist() == [[[1, 1, 0, 1]]]  # the input is not changed in place


def test_segment_planes_nests_only_when_asked():
    model, images = Pointwise(), _image(n=1)
    raw = segment_planes(model, images, WHOLE_IMAGE, precision="fp32", device=CPU)["task"]

    class TwoTasks(nn.Module):
        trunk = model.trunk

        def forward(self, x, return_gates=False):
            logits = model(x)["task"]
            return {"parent": logits, "child": logits[:, [1, 0]]}

    rules = (("child", (("parent", (2,)),)),)
    for nesting, nests in (("on", True), ("both", False), ("off", False)):
        options = Inference(nesting=nesting, nesting_rules=rules)
        out = segment_planes(TwoTasks(), images, options, precision="fp32", device=CPU)
        child_raw = (model(images)["task"][:, 0] > model(images)["task"][:, 1]).long()
        expected = torch.where(raw == 2, child_raw, 0) if nests else child_raw
        assert torch.equal(out["child"], expected), nesting
        assert torch.equal(out["parent"], raw)
    assert not torch.equal(torch.where(raw == 2, child_raw, 0), child_raw)  # it does remove some


@pytest.mark.parametrize(
    "inside,message",
    [
        ({"nosuch": ["edema"]}, "tasks.scar.inside.nosuch: 'nosuch' is not another task"),
        ({"scar": ["scar"]}, "tasks.scar.inside.scar: 'scar' is not another task"),
        ({"edema": ["oedema"]}, "tasks.scar.inside.edema: 'oedema' not a class of 'edema'"),
    ],
)
def test_inside_rules_are_checked(tmp_path, inside, message):
    from mmseg_heads.data.spec import load_data_spec

    path = _nested_spec(tmp_path, scar_inside=inside)
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_data_spec(path)


def test_a_cycle_of_inside_rules_is_an_error(tmp_path):
    from mmseg_heads.data.spec import load_data_spec

    path = _nested_spec(tmp_path, scar_inside={"edema": ["edema"]}, edema_inside={"scar": ["scar"]})
    with pytest.raises(UserError, match="'scar' ends up inside itself"):
        load_data_spec(path)


def test_nesting_rules_list_parents_first_with_class_indices(tmp_path):
    from mmseg_heads.data.spec import load_data_spec

    path = _nested_spec(
        tmp_path, scar_inside={"edema": ["edema"]}, edema_inside={"anatomy": ["myocardium"]}
    )
    assert load_data_spec(path).nesting() == (
        ("edema", (("anatomy", (1,)),)),
        ("scar", (("edema", (1,)),)),
    )


def _nested_spec(tmp_path, scar_inside=None, edema_inside=None):
    import yaml

    tasks = {
        # scar first, so that the order of the rules cannot come from the file's order
        "scar": {"labels": "l/{id}.png", "classes": ["background", "scar"]},
        "anatomy": {"labels": "l/{id}.png", "classes": ["background", "myocardium", "blood"]},
        "edema": {"labels": "l/{id}.png", "classes": ["background", "edema"]},
    }
    if scar_inside:
        tasks["scar"]["inside"] = scar_inside
    if edema_inside:
        tasks["edema"]["inside"] = edema_inside
    spec = {
        "modalities": {"a": {"files": "a/{id}.png"}},
        "tasks": tasks,
        "splits": {"train": {"fraction": 1.0}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
