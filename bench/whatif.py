"""What-if measurements: package changes that may pay (or did), each timed against the other way.

Nothing here changes the package; each candidate is applied from outside (a model converted, an
optimizer option, a module swapped, a function re-written here) and timed alternately with the
other behaviour. Changes that were applied since are kept, timed against what they replaced:

1. Training step of the trunk benchmark's model (C0, LGE, T2 with one resnet50 each; 3 tasks;
   batch 2, 256×256), fp32 and bf16:
   - ``channels_last``: model and inputs in channels-last memory format (``engine/trainer.py``,
     ``engine/evaluator.py::to_device``);
   - ``fused AdamW``: ``torch.optim.AdamW(..., fused=True)`` (``engine/optim.py::build_optimizer``);
   - both together;
   - ``single-source pass-through``: with early fusion (``{"C0+LGE+T2": resnet50}``) every stride
     has one source, and its concat fusion still runs a 1×1 conv + BN + ReLU; the what-if passes
     the (masked) features through (``models/trunk.py`` / ``models/fusion.py``). Not applied:
     on MyoPS it trained worse at the same budget (docs/results.md).
2. Metric update, 2×C×256×256 logits: ``logits.argmax(1)`` vs ``logits.max(1).indices`` and
   ``metrics/functional.py::predicted_classes`` (one comparison for two classes; all the same
   result), and a boolean-mask confusion matrix vs one ``bincount`` over
   ``torch.where(valid, index, C*C)`` (applied: ``metrics/functional.py::confusion_matrix``).
3. Dice term, forward + backward (applied): ``losses/functional.py::soft_dice`` (``gather`` +
   ``index_add_`` + ``bincount``, no C×H×W one-hot, no boolean indexing) vs the one-hot formula it
   replaced, re-written here; values and gradients checked equal.

    python bench/whatif.py
    python bench/whatif.py --quick
"""

from __future__ import annotations

import common
import torch
import torch.nn.functional as F
from torch import nn

from mmseg_heads.losses.functional import soft_dice
from mmseg_heads.metrics.functional import confusion_matrix, predicted_classes

MODALITIES = {"C0": 1, "LGE": 1, "T2": 1}
TASKS = {"anatomy": 4, "scar": 2, "edema": 2}


class PassThrough(nn.Module):
    """A one-source fusion without projection: the features, zeroed where the source is missing."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def forward(self, features, present):
        x = features[self.source]
        return x * present[self.source].to(x.dtype).view(-1, 1, 1, 1), None


def single_source_pass_through(model: nn.Module) -> nn.Module:
    for key in list(model.trunk.fusions):
        sources = model.trunk.channels_at(int(key))
        if len(sources) == 1:
            model.trunk.fusions[key] = PassThrough(next(iter(sources)))
    return model


def confusion_matrix_where(pred, target, num_classes: int, ignore_index: int):
    """``confusion_matrix`` without boolean-mask indexing: ignored pixels go to one extra bin."""
    valid = target != ignore_index
    index = torch.where(valid, target * num_classes + pred, num_classes * num_classes)
    counts = torch.bincount(index.flatten(), minlength=num_classes * num_classes + 1)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes)


def soft_dice_one_hot(logits, target, *, ignore_index: int, smooth: float = 1.0):
    """``soft_dice`` as it was (batch pooling): a one-hot of the target, products and sums."""
    valid = (target != ignore_index).unsqueeze(1)
    probs = F.softmax(logits.float(), dim=1) * valid
    index = torch.where(valid, target.unsqueeze(1), 0)
    one_hot = torch.zeros_like(probs).scatter_(1, index, 1.0) * valid
    intersection = (probs * one_hot).sum((0, 2, 3))
    cardinality = (probs + one_hot).sum((0, 2, 3))
    dice = (2.0 * intersection + smooth) / (cardinality + smooth)
    return (1.0 - dice)[one_hot.sum((0, 2, 3)) > 0].mean()


def step_variants(args, device, encoder, size) -> tuple[dict, dict]:
    batch = common.synthetic_batch(MODALITIES, TASKS, batch=args.batch, size=size, device=device)
    per_modality = {m: encoder for m in MODALITIES}
    early = {"+".join(MODALITIES): encoder}

    def build(encoders):
        torch.manual_seed(0)
        return common.build_ours(encoders, modalities=MODALITIES, tasks=TASKS).to(device)

    criterion = common.multitask_loss(TASKS).to(device)
    base = build(per_modality)
    channels_last, last = common.as_trained(build(per_modality), batch)
    base_opt = torch.optim.AdamW(base.parameters(), lr=1e-4, weight_decay=1e-4)
    fused_opt = torch.optim.AdamW(base.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
    base_last_opt = torch.optim.AdamW(channels_last.parameters(), lr=1e-4, weight_decay=1e-4)
    last_opt = torch.optim.AdamW(channels_last.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
    early_package = build(early)
    early_pass_through = single_source_pass_through(build(early))
    variants, pairs = {}, {}
    for p in common.PRECISIONS:
        measured = {"trained_layout": False}  # each choice on its own, below
        variants[f"base/{p}"] = common.ours_step(
            base, criterion, batch, p, device, optimizer=base_opt, **measured
        )
        variants[f"channels_last/{p}"] = common.ours_step(
            channels_last, criterion, last, p, device, optimizer=base_last_opt, **measured
        )
        variants[f"fused AdamW/{p}"] = common.ours_step(
            base, criterion, batch, p, device, optimizer=fused_opt, **measured
        )
        variants[f"channels_last + fused AdamW/{p}"] = common.ours_step(
            channels_last, criterion, last, p, device, optimizer=last_opt, **measured
        )
        variants[f"early/{p}"] = common.ours_step(early_package, criterion, batch, p, device)
        variants[f"early, pass-through/{p}"] = common.ours_step(
            early_pass_through, criterion, batch, p, device
        )
        pairs[f"channels_last/{p}"] = f"base/{p}"
        pairs[f"fused AdamW/{p}"] = f"base/{p}"
        pairs[f"channels_last + fused AdamW/{p}"] = f"base/{p}"
        pairs[f"early, pass-through/{p}"] = f"early/{p}"
    pairs["base/bf16"] = "base/fp32"
    return variants, pairs


def metric_variants(classes: int, size: int, batch: int, device) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(batch, classes, size, size, generator=g).to(device)
    target = torch.randint(0, classes, (batch, size, size), generator=g)
    target[:, -4:] = common.IGNORE_INDEX
    target = target.to(device)
    assert torch.equal(logits.argmax(1), logits.max(1).indices)
    assert torch.equal(logits.argmax(1), predicted_classes(logits))
    reference = confusion_matrix(logits.argmax(1), target, classes, common.IGNORE_INDEX)
    assert torch.equal(
        reference, confusion_matrix_where(logits.argmax(1), target, classes, common.IGNORE_INDEX)
    )
    variants = {
        f"argmax(1) + confusion_matrix/C={classes}": lambda: confusion_matrix(
            logits.argmax(1), target, classes, common.IGNORE_INDEX
        ),
        f"max(1).indices + confusion_matrix/C={classes}": lambda: confusion_matrix(
            logits.max(1).indices, target, classes, common.IGNORE_INDEX
        ),
        f"max(1).indices + where-bincount/C={classes}": lambda: confusion_matrix_where(
            logits.max(1).indices, target, classes, common.IGNORE_INDEX
        ),
        f"predicted_classes + confusion_matrix (package)/C={classes}": lambda: confusion_matrix(
            predicted_classes(logits), target, classes, common.IGNORE_INDEX
        ),
    }
    base = f"argmax(1) + confusion_matrix/C={classes}"
    return variants, {k: base for k in variants if k != base}


def dice_variants(classes: int, size: int, batch: int, device) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(batch, classes, size, size, generator=g).to(device).requires_grad_()
    target = torch.randint(0, max(classes - 1, 1), (batch, size, size), generator=g)
    target[:, -4:] = common.IGNORE_INDEX  # the last class absent: it must be left out
    target = target.to(device)
    a = soft_dice(logits, target, ignore_index=common.IGNORE_INDEX)
    (grad_a,) = torch.autograd.grad(a, logits)
    b = soft_dice_one_hot(logits, target, ignore_index=common.IGNORE_INDEX)
    (grad_b,) = torch.autograd.grad(b, logits)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad_a, grad_b)

    def run(fn):
        def call():
            logits.grad = None
            fn(logits, target, ignore_index=common.IGNORE_INDEX).backward()

        return call

    base = f"soft_dice, one-hot (before)/C={classes}"
    variants = {
        base: run(soft_dice_one_hot),
        f"soft_dice, index_add_ + bincount (package)/C={classes}": run(soft_dice),
    }
    return variants, {k: base for k in variants if k != base}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="default resnet50 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="default 256 (quick: 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, nargs="+", default=None, help="2 4 21 (quick: 4)")
    p.add_argument("--skip-steps", action="store_true", help="only the metric and dice parts")
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=1)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet50")
    size = args.size or (32 if args.quick else 256)
    args.classes = args.classes or ([4] if args.quick else [2, 4, 21])

    sections = []
    if not args.skip_steps:
        sections.append(("training step", *step_variants(args, device, encoder, size)))
    for classes in args.classes:
        sections.append((f"metric update, C={classes}", *metric_variants(classes, size, args.batch, device)))  # fmt: skip
        sections.append((f"dice term, C={classes}", *dice_variants(classes, size, args.batch, device)))  # fmt: skip

    rows, ratios, body, noise = [], {}, [], {}
    for title, variants, pairs in sections:
        reps = args.reps if title == "training step" else max(args.reps, 2 if args.quick else 15)
        timings = common.alternate(
            variants, reps=reps, warmup=args.warmup, device=device, label=f"whatif {title}"
        )
        noise |= timings.spreads()
        for variant, baseline in pairs.items():
            speedup = timings.ratio(baseline, variant)
            ratios[variant] = speedup
            rows.append(
                {
                    "section": title,
                    "variant": variant,
                    "baseline": baseline,
                    "variant_s": timings.median(variant),
                    "baseline_s": timings.median(baseline),
                    "speedup": speedup,
                }
            )
            body.append(
                [
                    title,
                    variant,
                    baseline,
                    timings.median(baseline) * 1e3,
                    timings.median(variant) * 1e3,
                    speedup,
                ]
            )
    common.report(
        "whatif",
        args,
        settings={"encoder": encoder, "size": size, "batch": args.batch, "classes": args.classes},
        rows=rows,
        ratios=ratios,
        targets={},
        noise=noise,
        tables=[
            common.table(
                ["section", "candidate", "vs", "baseline ms", "candidate ms", "speedup"], body
            )
        ],
        notes=[
            "speedup = baseline time / candidate time, median of per-round ratios; "
            "> 1 means the change pays",
            "the metric and dice candidates are checked to give the same results as the package",
        ],
    )


if __name__ == "__main__":
    main()
