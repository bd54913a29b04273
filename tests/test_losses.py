"""Loss functions, TaskLoss and MultiTaskLoss (mmseg_heads.losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_heads.losses import functional as LF
from mmseg_heads.losses.multitask import MultiTaskLoss
from mmseg_heads.losses.task_loss import LOSS_TERMS, TaskLoss

IGNORE = 255


def _logits(n=2, c=3, h=4, w=4, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, requires_grad=False)


def _target(n=2, c=3, h=4, w=4, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n, h, w), generator=g)


def _pixels(logits: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> (N·H·W)×C."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def _one_hot_logits(target: torch.Tensor, num_classes: int, scale: float) -> torch.Tensor:
    return F.one_hot(target, num_classes).permute(0, 3, 1, 2).float() * scale


# --- cross-entropy ---------------------------------------------------------------------------


def test_cross_entropy_equals_torch_on_valid_pixels_only():
    logits, target = _logits(), _target()
    target[0, :2] = IGNORE
    valid = (target != IGNORE).reshape(-1)
    expected = F.cross_entropy(_pixels(logits)[valid], target.reshape(-1)[valid])
    loss = LF.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(loss, expected)


def test_cross_entropy_class_weights_give_weighted_mean_over_valid_pixels():
    logits, target = _logits(), _target()
    target[1, 3] = IGNORE
    weights = torch.tensor([0.2, 1.0, 3.0])
    valid = (target != IGNORE).reshape(-1)
    flat_t = target.reshape(-1)[valid]
    per_pixel = -F.log_softmax(_pixels(logits)[valid], dim=1).gather(1, flat_t[:, None])[:, 0]
    expected = (weights[flat_t] * per_pixel).sum() / weights[flat_t].sum()
    loss = LF.cross_entropy(logits, target, ignore_index=IGNORE, class_weights=weights)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("log_probs", [False, True])
def test_cross_entropy_equals_torch_mean_with_weights_and_smoothing(smoothing, log_probs):
    """Our sum / count (no host sync) is PyTorch's ``reduction="mean"``, weights and smoothing
    included."""
    logits, target = _logits(), _target()
    target[0, 1] = IGNORE
    weights = torch.tensor([0.2, 1.0, 3.0])
    scores = F.log_softmax(logits, dim=1) if log_probs else logits
    loss = LF.cross_entropy(
        scores,
        target,
        ignore_index=IGNORE,
        class_weights=weights,
        label_smoothing=smoothing,
        log_probs=log_probs,
    )
    expected = F.cross_entropy(
        logits, target, weight=weights, ignore_index=IGNORE, label_smoothing=smoothing
    )
    torch.testing.assert_close(loss, expected)


def test_cross_entropy_all_ignore_is_zero_with_a_gradient_path():
    logits = _logits().requires_grad_(True)
    target = torch.full((2, 4, 4), IGNORE)
    loss = LF.cross_entropy(logits, target, ignore_index=IGNORE)
    assert loss.item() == 0.0
    assert torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_computes_in_float32_for_half_inputs():
    logits, target = _logits(), _target()
    loss = LF.cross_entropy(logits.bfloat16(), target, ignore_index=IGNORE)
    assert loss.dtype == torch.float32


# --- focal ---------------------------------------------------------------------------------


def test_focal_ignores_pixels_instead_of_diluting_the_mean():
    logits, target = _logits(), _target()
    target[..., 2:] = IGNORE  # right half ignored
    full = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0)
    half = LF.focal(logits[..., :2], target[..., :2], ignore_index=IGNORE, gamma=2.0)
    torch.testing.assert_close(full, half)
    # the naive mean over all pixels (ignored ones as 0) would be half of that
    assert not math.isclose(full.item(), half.item() / 2, rel_tol=1e-3)


def test_focal_gamma_zero_without_alpha_is_cross_entropy():
    logits, target = _logits(), _target()
    target[0, 0, 0] = IGNORE
    focal = LF.focal(logits, target, ignore_index=IGNORE, gamma=0.0)
    ce = LF.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(focal, ce)


def test_focal_matches_hand_formula_with_per_class_alpha():
    logits, target = _logits(), _target()
    target[1, 0] = IGNORE
    alpha = torch.tensor([0.25, 0.5, 1.0])
    gamma = 2.0
    valid = (target != IGNORE).reshape(-1)
    t = target.reshape(-1)[valid]
    p_t = F.softmax(_pixels(logits)[valid], dim=1).gather(1, t[:, None])[:, 0]
    expected = (alpha[t] * (1 - p_t) ** gamma * -p_t.log()).mean()
    loss = LF.focal(logits, target, ignore_index=IGNORE, gamma=gamma, alpha=alpha)
    torch.testing.assert_close(loss, expected)


def test_focal_scalar_alpha_scales_the_loss():
    logits, target = _logits(), _target()
    plain = LF.focal(logits, target, ignore_index=IGNORE)
    scaled = LF.focal(logits, target, ignore_index=IGNORE, alpha=0.25)
    torch.testing.assert_close(scaled, plain * 0.25)


def test_focal_down_weights_easy_pixels():
    # one confident correct pixel (p_t ~ 0.99) -> focal is (1 - p_t)^2 = 1e-4 times CE
    logits = torch.tensor([math.log(0.99), math.log(0.01)]).reshape(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.int64)
    focal = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0)
    assert focal.item() == pytest.approx(0.01**2 * -math.log(0.99), rel=1e-4)


def test_focal_all_ignore_is_zero_with_a_gradient_path():
    logits = _logits().requires_grad_(True)
    loss = LF.focal(logits, torch.full((2, 4, 4), IGNORE), ignore_index=IGNORE)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


# --- soft dice -------------------------------------------------------------------------------


def _dice_reference(logits, target, classes, smooth=1.0):
    """Mean of ``1 - (2 I + s) / (|P| + |Y| + s)`` over ``classes``, valid pixels only."""
    valid = (target != IGNORE).reshape(-1)
    probs = F.softmax(_pixels(logits), dim=1)[valid]
    t = target.reshape(-1)[valid]
    losses = []
    for c in classes:
        p, y = probs[:, c], (t == c).float()
        losses.append(1 - (2 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth))
    return torch.stack(losses).mean()


def test_soft_dice_matches_hand_formula():
    logits, target = _logits(), _target()
    target[0, 1] = IGNORE
    present = sorted(set(target[target != IGNORE].tolist()))
    loss = LF.soft_dice(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(loss, _dice_reference(logits, target, present))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("method", ["scatter", "onehot"])
def test_soft_dice_value_and_gradient_match_the_formula_at_21_classes(per_sample, method):
    """Both ways of taking the class sums (the CPU's scatter, the GPU's one-hot reductions)."""
    g = torch.Generator().manual_seed(21)
    logits = torch.randn(2, 21, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 21, (2, 8, 8), generator=g)
    target[0, :3] = IGNORE
    target[1, 2, 2] = 20  # class 20 in sample 1 only … and absent from sample 0's valid pixels
    target[0][target[0] == 20] = 19
    loss = LF.soft_dice(logits, target, ignore_index=IGNORE, per_sample=per_sample, method=method)
    if per_sample:
        terms = [
            _dice_reference(logits[i : i + 1], target[i : i + 1], [c])
            for i in range(2)
            for c in sorted(set(target[i][target[i] != IGNORE].tolist()))
        ]
        expected = torch.stack(terms).mean()
    else:
        expected = _dice_reference(logits, target, sorted(set(target[target != IGNORE].tolist())))
    torch.testing.assert_close(loss, expected)
    (ours,) = torch.autograd.grad(loss, logits)
    (reference,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(ours, reference)
    assert ours[0, :, :3].abs().max() == 0  # ignored pixels get no gradient


def test_soft_dice_of_perfect_confident_logits_is_near_zero():
    target = _target()
    loss = LF.soft_dice(_one_hot_logits(target, 3, 50.0), target, ignore_index=IGNORE)
    assert 0.0 <= loss.item() < 1e-6


def test_soft_dice_of_wrong_confident_logits_is_near_one():
    target = _target()
    wrong = (target + 1) % 3
    loss = LF.soft_dice(_one_hot_logits(wrong, 3, 50.0), target, ignore_index=IGNORE, smooth=0.0)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("scale", [10.0, 20.0, 50.0])
def test_soft_dice_leaves_out_classes_absent_from_the_target(scale):
    # classes 0 and 1 present, class 2 absent; a quarter of the pixels are predicted wrongly
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 1, 0]]])
    pred = target.clone()
    pred[0, 3] = 1 - pred[0, 3]
    logits = _one_hot_logits(pred, 3, scale)
    loss = LF.soft_dice(logits, target, ignore_index=IGNORE)
    present_only = _dice_reference(logits, target, [0, 1])
    with_absent = _dice_reference(logits, target, [0, 1, 2])
    torch.testing.assert_close(loss, present_only)
    # counting the absent class (dice ~1 from the smooth term) would pull the loss down by 1/3
    assert present_only.item() > 0.1
    assert with_absent.item() < present_only.item() * 0.7


def test_soft_dice_does_not_tend_to_zero_when_scaling_logits_with_an_absent_class():
    target = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 0]]])
    pred = target.clone()
    pred[0, 0, 0] = 1
    losses = [
        LF.soft_dice(_one_hot_logits(pred, 3, s), target, ignore_index=IGNORE).item()
        for s in (10.0, 20.0, 50.0)
    ]
    # one of 4 class-0 pixels wrong: class 0 dice (6+1)/(7+1), class 1 dice (8+1)/(9+1)
    limit = ((1 - 7 / 8) + (1 - 9 / 10)) / 2
    assert losses[-1] == pytest.approx(limit, rel=1e-4)
    assert min(losses) > 0.1


def test_soft_dice_ignores_logits_of_ignored_pixels():
    logits, target = _logits(), _target()
    target[:, 0] = IGNORE
    changed = logits.clone()
    changed[:, :, 0] = torch.tensor([100.0, -100.0, 7.0])[:, None]
    a = LF.soft_dice(logits, target, ignore_index=IGNORE)
    b = LF.soft_dice(changed, target, ignore_index=IGNORE)
    torch.testing.assert_close(a, b)


def test_soft_dice_ignored_pixels_get_no_gradient():
    logits = _logits().requires_grad_(True)
    target = _target()
    target[:, 0] = IGNORE
    LF.soft_dice(logits, target, ignore_index=IGNORE).backward()
    assert torch.equal(logits.grad[:, :, 0], torch.zeros_like(logits.grad[:, :, 0]))
    assert logits.grad[:, :, 1:].abs().sum() > 0


def test_soft_dice_per_sample_averages_over_images_and_present_classes():
    logits, target = _logits(), _target()
    target[1] = 0  # image 1 holds only class 0
    per_sample = LF.soft_dice(logits, target, ignore_index=IGNORE, per_sample=True)
    terms = []
    for i in range(2):
        present = sorted(set(target[i].flatten().tolist()))
        terms += [_dice_reference(logits[i : i + 1], target[i : i + 1], [c]) for c in present]
    torch.testing.assert_close(per_sample, torch.stack(terms).mean())


def test_soft_dice_all_ignore_is_zero_with_a_gradient_path():
    logits = _logits().requires_grad_(True)
    loss = LF.soft_dice(logits, torch.full((2, 4, 4), IGNORE), ignore_index=IGNORE)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


# --- TaskLoss ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, t, **k: LF.cross_entropy(x, t, ignore_index=IGNORE, **k),
        lambda x, t, **k: LF.cross_entropy(
            x, t, ignore_index=IGNORE, class_weights=torch.tensor([0.2, 1.0, 3.0, 0.5]), **k
        ),
        lambda x, t, **k: LF.cross_entropy(x, t, ignore_index=IGNORE, label_smoothing=0.1, **k),
        lambda x, t, **k: LF.focal(
            x, t, ignore_index=IGNORE, gamma=2.0, alpha=torch.tensor([1.0, 0.5, 2.0, 1.0]), **k
        ),
        lambda x, t, **k: LF.soft_dice(x, t, ignore_index=IGNORE, **k),
        lambda x, t, **k: LF.soft_dice(x, t, ignore_index=IGNORE, per_sample=True, **k),
    ],
    ids=["ce", "ce-weights", "ce-smoothing", "focal-alpha", "dice", "dice-per-sample"],
)
def test_each_loss_of_log_probabilities_equals_it_of_logits_value_and_gradient(loss):
    """TaskLoss hands every term one log_softmax: the same value and gradient as from logits."""
    logits = (_logits(c=4, h=8, w=8) * 3).requires_grad_()
    target = _target(c=4, h=8, w=8)
    target[1, :3] = IGNORE
    direct = loss(logits, target)
    (grad_direct,) = torch.autograd.grad(direct, logits)
    shared = loss(F.log_softmax(logits, dim=1), target, log_probs=True)
    (grad_shared,) = torch.autograd.grad(shared, logits)
    assert shared.item() == pytest.approx(direct.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(grad_shared, grad_direct, rtol=1e-4, atol=1e-7)
    assert grad_direct.abs().sum() > 0


def test_task_loss_takes_the_softmax_once_for_all_its_terms(monkeypatch):
    calls = []
    softmax, log_softmax = F.softmax, F.log_softmax
    monkeypatch.setattr(F, "softmax", lambda *a, **k: calls.append("softmax") or softmax(*a, **k))
    monkeypatch.setattr(
        F, "log_softmax", lambda *a, **k: calls.append("log_softmax") or log_softmax(*a, **k)
    )
    loss = TaskLoss({"ce": {}, "dice": {}, "focal": {}}, ignore_index=IGNORE)
    total, parts = loss(_logits(), _target())
    assert calls == ["log_softmax"] and set(parts) == {"ce", "dice", "focal"}
    expected = sum(
        f(_logits(), _target(), ignore_index=IGNORE)
        for f in (LF.cross_entropy, LF.soft_dice, LF.focal)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_term_registry_has_the_documented_terms():
    assert {"ce", "focal", "dice"} <= set(LOSS_TERMS.names())


def test_task_loss_returns_each_term_and_their_weighted_sum():
    logits, target = _logits(), _target()
    loss_fn = TaskLoss({"ce": {"weight": 0.5}, "dice": {"weight": 2.0}}, ignore_index=IGNORE)
    total, parts = loss_fn(logits, target)
    ce = LF.cross_entropy(logits, target, ignore_index=IGNORE)
    dice = LF.soft_dice(logits, target, ignore_index=IGNORE)
    assert set(parts) == {"ce", "dice"}
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["dice"], dice)
    torch.testing.assert_close(total, 0.5 * ce + 2.0 * dice)


def test_task_loss_default_weight_is_one():
    logits, target = _logits(), _target()
    total, parts = TaskLoss({"ce": {}}, ignore_index=IGNORE)(logits, target)
    torch.testing.assert_close(total, parts["ce"])


def test_task_loss_passes_term_options():
    logits, target = _logits(), _target()
    loss_fn = TaskLoss(
        {"focal": {"weight": 1.0, "gamma": 0.0, "alpha": [1.0, 2.0, 3.0]}}, ignore_index=IGNORE
    )
    total, _ = loss_fn(logits, target)
    expected = LF.focal(
        logits, target, ignore_index=IGNORE, gamma=0.0, alpha=torch.tensor([1.0, 2.0, 3.0])
    )
    torch.testing.assert_close(total, expected)
    weighted = TaskLoss({"ce": {"class_weights": [1.0, 2.0, 3.0]}}, ignore_index=IGNORE)
    expected_ce = LF.cross_entropy(
        logits, target, ignore_index=IGNORE, class_weights=torch.tensor([1.0, 2.0, 3.0])
    )
    torch.testing.assert_close(weighted(logits, target)[0], expected_ce)
    assert not torch.allclose(expected_ce, LF.cross_entropy(logits, target, ignore_index=IGNORE))


def test_task_loss_counts_only_samples_with_labels():
    logits, target = _logits(n=3), _target(n=3)
    has_label = torch.tensor([True, False, True])
    loss_fn = TaskLoss({"ce": {"weight": 1.0}}, ignore_index=IGNORE)
    total, _ = loss_fn(logits, target, has_label)
    expected = LF.cross_entropy(logits[[0, 2]], target[[0, 2]], ignore_index=IGNORE)
    torch.testing.assert_close(total, expected)
    unmasked, _ = loss_fn(logits, target)
    assert not torch.allclose(total, unmasked)


def test_task_loss_all_true_has_label_equals_no_mask():
    logits, target = _logits(), _target()
    loss_fn = TaskLoss({"ce": {}}, ignore_index=IGNORE)
    torch.testing.assert_close(
        loss_fn(logits, target, torch.tensor([True, True]))[0], loss_fn(logits, target)[0]
    )


def test_task_loss_without_labelled_samples_is_an_exact_zero_with_a_gradient_path():
    logits = _logits().requires_grad_(True)
    loss_fn = TaskLoss({"ce": {}, "dice": {}, "focal": {}}, ignore_index=IGNORE)
    total, parts = loss_fn(logits, _target(), torch.tensor([False, False]))
    assert total.item() == 0.0 and all(v.item() == 0.0 for v in parts.values())
    total.backward()
    assert logits.grad is not None and logits.grad.abs().max() == 0


def test_task_loss_unknown_term_lists_valid_ones():
    with pytest.raises(KeyError, match="ce, dice, focal"):
        TaskLoss({"lovasz": {}}, ignore_index=IGNORE)


# --- MultiTaskLoss -----------------------------------------------------------------------------


def _two_tasks(weights=None) -> MultiTaskLoss:
    return MultiTaskLoss(
        {
            "a": TaskLoss({"ce": {}}, ignore_index=IGNORE),
            "b": TaskLoss({"ce": {"weight": 1.0}, "dice": {"weight": 0.5}}, ignore_index=IGNORE),
        },
        weights,
    )


def _batch():
    logits = {"a": _logits(c=3, seed=0), "b": _logits(c=2, seed=1)}
    labels = {"a": _target(c=3, seed=2), "b": _target(c=2, seed=3)}
    return logits, labels


def test_multitask_total_is_weighted_sum_of_task_losses():
    logits, labels = _batch()
    loss_fn = _two_tasks({"a": 2.0, "b": 0.25})
    total, parts = loss_fn(logits, labels)
    a, _ = loss_fn.task_losses["a"](logits["a"], labels["a"])
    b, b_terms = loss_fn.task_losses["b"](logits["b"], labels["b"])
    torch.testing.assert_close(total, 2.0 * a + 0.25 * b)
    torch.testing.assert_close(parts["a"], a)
    torch.testing.assert_close(parts["b"], b)
    torch.testing.assert_close(parts["b/dice"], b_terms["dice"])
    assert "a/ce" in parts and "b/ce" in parts
    assert parts["skipped"] == [] and not any(parts["nonfinite"].values())


def test_multitask_missing_task_weight_defaults_to_one():
    logits, labels = _batch()
    loss_fn = _two_tasks({"a": 3.0})
    assert loss_fn.task_weights == {"a": 3.0, "b": 1.0}
    total, parts = loss_fn(logits, labels)
    torch.testing.assert_close(total, 3.0 * parts["a"] + parts["b"])


def test_multitask_parts_are_detached_and_total_has_grad():
    logits, labels = _batch()
    logits = {k: v.requires_grad_(True) for k, v in logits.items()}
    total, parts = _two_tasks()(logits, labels)
    assert total.requires_grad
    assert not parts["a"].requires_grad and not parts["b/ce"].requires_grad


def test_multitask_skips_tasks_without_labels():
    logits, labels = _batch()
    has_label = {"a": torch.tensor([False, False]), "b": torch.tensor([True, False])}
    loss_fn = _two_tasks()
    total, parts = loss_fn(logits, labels, has_label)
    assert parts["skipped"] == ["a"]
    assert "a" not in parts
    b, _ = loss_fn.task_losses["b"](logits["b"][:1], labels["b"][:1])
    torch.testing.assert_close(total, b)
    # The trainer hands the host's counts instead (no read-back of has_label): the same result.
    again, parts = loss_fn(logits, labels, has_label, {"a": 0, "b": 1})
    assert parts["skipped"] == ["a"]
    torch.testing.assert_close(again, b)


def test_multitask_all_skipped_gives_zero_with_a_gradient_path():
    logits, labels = _batch()
    logits = {k: v.requires_grad_(True) for k, v in logits.items()}
    none = {k: torch.tensor([False, False]) for k in logits}
    total, parts = _two_tasks()(logits, labels, none)
    assert parts["skipped"] == ["a", "b"]
    assert total.item() == 0.0
    total.backward()
    assert logits["a"].grad is not None


def test_multitask_leaves_out_nonfinite_task():
    logits, labels = _batch()
    logits["a"] = logits["a"].clone()
    logits["a"][0, :, 0, 0] = math.nan
    loss_fn = _two_tasks({"a": 1.0, "b": 2.0})
    total, parts = loss_fn(logits, labels)
    assert {k: bool(v) for k, v in parts["nonfinite"].items()} == {"a": True, "b": False}
    assert not torch.isfinite(parts["a"])  # as computed; the trainer's means leave it out
    assert torch.isfinite(total)
    b, _ = loss_fn.task_losses["b"](logits["b"], labels["b"])
    torch.testing.assert_close(total, 2.0 * b)


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_multitask_nonfinite_task_gets_no_gradient_and_the_others_theirs(weighting):
    """Masked on the device, not by a Python branch: the gradients equal those of the step
    without the bad task (its logits get zeros, not NaN; its learned weight none)."""
    logits, labels = _batch()
    bad = logits["a"].clone()
    bad[0, :, 0, 0] = math.nan
    loss_fn = MultiTaskLoss(_two_tasks().task_losses, {"a": 1.0, "b": 2.0}, weighting)
    a, b = bad.requires_grad_(True), logits["b"].clone().requires_grad_(True)
    total, _ = loss_fn({"a": a, "b": b}, labels)
    total.backward()
    assert a.grad.abs().max() == 0 and torch.isfinite(a.grad).all()
    alone = logits["b"].clone().requires_grad_(True)
    b_loss, _ = loss_fn.task_losses["b"](alone, labels["b"])
    expected = 2.0 * b_loss  # s_t starts at 0: exp(-s) = 1, s / 2 = 0
    expected.backward()
    torch.testing.assert_close(b.grad, alone.grad)
    if weighting == "uncertainty":
        assert loss_fn.log_vars["a"].grad == 0  # its 0.5·s term is left out with its loss
