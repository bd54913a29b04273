"""Fusion modes, head kinds, attention gates and missing modalities on a 3-modality, 3-task model."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmseg_heads.losses.multitask import MultiTaskLoss
from mmseg_heads.losses.task_loss import TaskLoss
from mmseg_heads.models.build import build_model
from mmseg_heads.models.fusion import FUSIONS, AttentionFusion
from mmseg_heads.models.gates import GATES, NO_GATE, AttentionGate
from mmseg_heads.models.heads import HEADS

MODALITIES = {"C0": 1, "LGE": 1, "T2": 1}
TASKS = {"anatomy": 4, "scar": 2, "edema": 2}


def build(fusion="concat", heads=None, dropout=0.0, encoders=None):
    return build_model(
        {
            "encoders": encoders or {m: "resnet18" for m in MODALITIES},
            "pretrained": "none",
            "depth": 5,
            "fusion": fusion,
            "modality_dropout": dropout,
            "decoder_channels": [32, 16, 16, 8, 8],
            "heads": heads or {},
        },
        modalities=MODALITIES,
        tasks=TASKS,
    )


def batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = {m: torch.randn(n, 1, size, size, generator=g) for m in MODALITIES}
    labels = {t: torch.randint(0, c, (n, size, size), generator=g) for t, c in TASKS.items()}
    return images, labels


def criterion():
    return MultiTaskLoss(
        {
            t: TaskLoss({"ce": {"weight": 1.0}, "dice": {"weight": 1.0}}, ignore_index=255)
            for t in TASKS
        }
    )


def _head_kinds() -> dict[str, dict]:
    """Every registered head kind with no gate and with each registered gate; own-decoder kinds
    also branching off one modality (``branch`` for ``own``)."""
    kinds = {}
    for decoder in HEADS.names():
        sources = {"fused": decoder}
        if not HEADS.get(decoder).uses_shared_decoder:
            sources["T2"] = "branch" if decoder == "own" else f"{decoder}-branch"
        for source, name in sources.items():
            for gate in (NO_GATE, *GATES.names()):
                kinds[name if gate == NO_GATE else f"{name}+{gate}"] = {
                    "source": source,
                    "decoder": decoder,
                    "gate": gate,
                }
    return kinds


HEAD_KINDS = _head_kinds()


@pytest.mark.parametrize("fusion", FUSIONS.names())
@pytest.mark.parametrize("head", list(HEAD_KINDS))
def test_every_fusion_and_head_kind_trains_with_finite_loss(fusion, head):
    torch.manual_seed(0)
    model = build(fusion, heads={t: HEAD_KINDS[head] for t in TASKS}, dropout=0.3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = criterion()
    images, labels = batch()
    before = [p.detach().clone() for p in model.heads.parameters()]
    for _ in range(3):
        loss, parts = loss_fn(model(images), labels)
        assert torch.isfinite(loss) and not any(parts["nonfinite"].values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.heads.parameters(), strict=True))


def test_attention_fusion_weights_are_a_softmax_over_present_modalities():
    fusion = AttentionFusion({"a": 4, "b": 6, "c": 5}, out_channels=8)
    features = {
        "a": torch.randn(3, 4, 4, 4),
        "b": torch.randn(3, 6, 4, 4),
        "c": torch.randn(3, 5, 4, 4),
    }
    present = {
        "a": torch.tensor([True, True, False]),
        "b": torch.tensor([True, False, False]),
        "c": torch.tensor([True, True, True]),
    }
    fused, weights = fusion(features, present)
    assert fused.shape == (3, 8, 4, 4)
    mask = torch.stack([present[s] for s in "abc"], dim=1)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert (weights[~mask] == 0).all()
    assert torch.allclose(weights[2], torch.tensor([0.0, 0.0, 1.0]))


def test_a_missing_modality_changes_nothing_it_should_not_read():
    """With a modality absent, the attention fusion's output must not depend on its features."""
    fusion = AttentionFusion({"a": 4, "b": 4}, out_channels=4).eval()
    present = {"a": torch.tensor([True]), "b": torch.tensor([False])}
    a = torch.randn(1, 4, 4, 4)
    out1, _ = fusion({"a": a, "b": torch.randn(1, 4, 4, 4)}, present)
    out2, _ = fusion({"a": a, "b": torch.randn(1, 4, 4, 4) * 100}, present)
    assert torch.allclose(out1, out2)


@pytest.mark.parametrize("fusion", FUSIONS.names())
@pytest.mark.parametrize("missing", list(MODALITIES))
def test_a_batch_with_a_modality_missing_gives_finite_outputs_for_every_head(fusion, missing):
    heads = {
        "anatomy": HEAD_KINDS["shared+attention"],
        "scar": HEAD_KINDS["own+attention"],
        "edema": HEAD_KINDS["branch"],
    }
    model = build(fusion, heads=heads).eval()
    images, _ = batch()
    del images[missing]
    with torch.no_grad():
        logits, gates = model(images, return_gates=True)
    assert set(logits) == set(TASKS)
    for task, value in logits.items():
        assert value.shape == (2, TASKS[task], 32, 32) and torch.isfinite(value).all(), task
    for stride, weights in gates["fusion"].items():
        if weights is not None:
            column = list(model.trunk.groups).index(missing)
            assert (weights[:, column] == 0).all(), stride


def test_per_sample_missing_modality_through_present_mask():
    model = build("attention").eval()
    images, _ = batch(n=3)
    present = {"LGE": torch.tensor([True, False, True])}
    with torch.no_grad():
        _, gates = model(images, present, return_gates=True)
    column = list(model.trunk.groups).index("LGE")
    for weights in gates["fusion"].values():
        assert weights[1, column] == 0 and (weights[[0, 2], column] > 0).all()


def test_a_stacked_group_zero_fills_a_missing_member_and_still_encodes():
    """Early fusion cannot leave one modality out: its channels become zeros, the rest is read."""
    model = build(encoders={"C0+LGE+T2": "resnet18"}).eval()
    trunk = model.trunk
    images, _ = batch(n=2)
    without_lge = {m: x for m, x in images.items() if m != "LGE"}
    zero_filled = {**images, "LGE": torch.zeros_like(images["LGE"])}
    with torch.no_grad():
        ablated = trunk(without_lge)
        reference = trunk(zero_filled)
    assert ablated.present["C0+LGE+T2"].all()
    for stride, features in ablated.per_group["C0+LGE+T2"].items():
        assert torch.equal(features, reference.per_group["C0+LGE+T2"][stride]), stride
        assert features.abs().sum() > 0  # encoded, not the zeros of an absent group


def test_a_stacked_group_zero_fills_a_member_per_sample():
    model = build(encoders={"C0+LGE+T2": "resnet18"}).eval()
    images, _ = batch(n=2)
    present = {"T2": torch.tensor([True, False])}
    second_zeroed = {**images, "T2": images["T2"] * torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)}
    with torch.no_grad():
        masked = model(images, present)
        reference = model(second_zeroed)
        unmasked = model(images)
    for task in TASKS:
        assert torch.allclose(masked[task], reference[task], atol=1e-6), task
        assert torch.allclose(masked[task][0], unmasked[task][0], atol=1e-6), task
        assert not torch.allclose(masked[task][1], unmasked[task][1]), task


def test_modality_dropout_never_drops_every_modality():
    model = build("attention", dropout=0.9)
    trunk = model.trunk
    torch.manual_seed(0)
    present = {g: torch.ones(256, dtype=torch.bool) for g in trunk.groups}
    for _ in range(20):
        kept = torch.stack(list(trunk.drop_modalities(present).values()), dim=1)
        assert kept.any(dim=1).all()
        assert not kept.all()  # at p=0.9 some are really dropped
    # A group absent from the input is never brought back by the restore step.
    present["C0"] = torch.zeros(256, dtype=torch.bool)
    for _ in range(20):
        assert not trunk.drop_modalities(present)["C0"].any()


def test_modality_dropout_is_off_in_eval_mode():
    model = build("attention", dropout=0.9).eval()
    images, _ = batch()
    with torch.no_grad():
        first = model(images)
        second = model(images)
    for task in TASKS:
        assert torch.equal(first[task], second[task])


def test_task_gates_return_modality_weights_per_stride_that_sum_to_one():
    heads = {
        "anatomy": HEAD_KINDS["own+attention"],
        "scar": HEAD_KINDS["shared+attention"],
        "edema": HEAD_KINDS["branch+attention"],
    }
    model = build("concat", heads=heads).eval()
    images, _ = batch()
    with torch.no_grad():
        _, gates = model(images, return_gates=True)
    own = gates["heads"]["anatomy"]
    assert sorted(own["modality"]) == [lv.stride for lv in model.trunk.levels]
    for weights in itertools.chain(
        own["modality"].values(), gates["heads"]["scar"]["modality"].values()
    ):
        assert weights.shape == (2, 3) and torch.allclose(weights.sum(1), torch.ones(2))
    assert len(own["spatial"]) == 4  # ResNet: skips at strides 16, 8, 4, 2
    assert "modality" not in gates["heads"]["edema"]  # one modality: nothing to weigh
    for alpha in own["spatial"]:
        assert ((alpha > 0) & (alpha < 1)).all()


def test_additive_attention_gate_formula():
    gate = AttentionGate(x_channels=2, g_channels=3, inter_channels=2)
    x, g = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    out, alpha = gate(x, g)
    up = torch.nn.functional.interpolate(
        gate.phi_g(g), size=(4, 4), mode="bilinear", align_corners=False
    )
    expected = torch.sigmoid(gate.psi(torch.relu(gate.theta_x(x) + up)))
    assert torch.allclose(alpha, expected) and torch.allclose(out, x * expected)


def test_branch_head_with_gate_still_has_no_path_to_other_encoders():
    model = build("attention", heads={"edema": HEAD_KINDS["branch+attention"]})
    images, _ = batch()
    model(images)["edema"].sum().backward()
    touched = {
        g: any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
        for g, enc in model.trunk.encoders.items()
    }
    assert touched == {"C0": False, "LGE": False, "T2": True}
