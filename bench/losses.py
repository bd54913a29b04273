"""Losses and metrics: their share of a training step, and their time vs the usual path.

1. Share: ``MultiTaskLoss`` (ce + dice per task) forward + backward to the logits, plus
   the per-batch confusion matrix the trainer keeps (see below), for all three tasks of the trunk
   benchmark's model (C0, LGE, T2; anatomy 4, scar 2, edema 2 classes), against that model's full
   training step, timed alternately. Target ≤ 1 %.
2. Vs the usual path, one task with C classes at 256×256, batch 2 (C in 2, 4, 21). The usual path
   is a re-implementation, written here from the published code of bubbliiiing/unet-pytorch
   (``utils/dataloader.py``, ``nets/unet_training.py``, ``utils/utils_metrics.py``,
   ``utils/utils_fit.py``): the data loader builds a float64 one-hot label per sample with
   ``np.eye(C + 1)[png.reshape(-1)]`` and the collate function stacks it into a FloatTensor;
   the step computes ``CE_Loss`` + ``Dice_loss`` on it, backward, then ``f_score`` (softmax,
   threshold 0.5, tp/fp/fn sums) under ``no_grad``, and ``.item()`` of both. Ours: index labels
   straight from collate, ``TaskLoss`` ce + dice forward + backward, the confusion-matrix
   update, ``float(loss)``. Only what differs is timed: label mapping and the index-label
   collate exist on both paths and are left out. Target: ours ≥ 5× faster.

Metric updates are the training path's (``predicted_classes``, one ``bincount``, no label-range
check: the step's cross-entropy rejects such labels already); extra columns give ours with the
evaluation path's label-range check, and ours without any metric update.

    python bench/losses.py
    python bench/losses.py --quick
"""

from __future__ import annotations

import common
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmseg_heads.metrics import functional as MF
from mmseg_heads.metrics.confusion import ConfusionMatrix

MODALITIES = {"C0": 1, "LGE": 1, "T2": 1}
TASKS = {"anatomy": 4, "scar": 2, "edema": 2}
SHARE_TARGET = 0.01
SPEEDUP_TARGET = 5.0

# ----------------------------------------------------------------------------------------------
# The usual path: a faithful re-implementation of bubbliiiing/unet-pytorch (MIT licence), kept
# as close to its published code as possible, including the transposes, float64 one-hot and
# ``.item()`` calls. Labels equal to ``num_classes`` (VOC's 255 border, mapped there by the data
# loader) are ignored by its cross-entropy and are the one-hot's last, dropped column.


def usual_one_hot(png: np.ndarray, num_classes: int) -> np.ndarray:
    """``UnetDataset.__getitem__``: ``png`` already has values >= num_classes set to num_classes."""
    seg_labels = np.eye(num_classes + 1)[png.reshape([-1])]
    return seg_labels.reshape((int(png.shape[0]), int(png.shape[1]), num_classes + 1))


def usual_collate_one_hot(seg_labels: list[np.ndarray]) -> torch.Tensor:
    """``unet_dataset_collate``'s line for the one-hot labels."""
    return torch.from_numpy(np.array(seg_labels)).type(torch.FloatTensor)


def usual_ce_loss(inputs, target, cls_weights, num_classes=21):
    """``nets/unet_training.py::CE_Loss``."""
    n, c, h, w = inputs.size()
    nt, ht, wt = target.size()
    if h != ht and w != wt:
        inputs = F.interpolate(inputs, size=(ht, wt), mode="bilinear", align_corners=True)
    temp_inputs = inputs.transpose(1, 2).transpose(2, 3).contiguous().view(-1, c)
    temp_target = target.view(-1)
    return nn.CrossEntropyLoss(weight=cls_weights, ignore_index=num_classes)(
        temp_inputs, temp_target
    )


def usual_dice_loss(inputs, target, beta=1, smooth=1e-5):
    """``nets/unet_training.py::Dice_loss``."""
    n, c, h, w = inputs.size()
    nt, ht, wt, ct = target.size()
    if h != ht and w != wt:
        inputs = F.interpolate(inputs, size=(ht, wt), mode="bilinear", align_corners=True)
    temp_inputs = torch.softmax(
        inputs.transpose(1, 2).transpose(2, 3).contiguous().view(n, -1, c), -1
    )
    temp_target = target.view(n, -1, ct)
    tp = torch.sum(temp_target[..., :-1] * temp_inputs, axis=[0, 1])
    fp = torch.sum(temp_inputs, axis=[0, 1]) - tp
    fn = torch.sum(temp_target[..., :-1], axis=[0, 1]) - tp
    score = ((1 + beta**2) * tp + smooth) / ((1 + beta**2) * tp + beta**2 * fn + fp + smooth)
    return 1 - torch.mean(score)


def usual_f_score(inputs, target, beta=1, smooth=1e-5, threhold=0.5):
    """``utils/utils_metrics.py::f_score``."""
    n, c, h, w = inputs.size()
    nt, ht, wt, ct = target.size()
    if h != ht and w != wt:
        inputs = F.interpolate(inputs, size=(ht, wt), mode="bilinear", align_corners=True)
    temp_inputs = torch.softmax(
        inputs.transpose(1, 2).transpose(2, 3).contiguous().view(n, -1, c), -1
    )
    temp_target = target.view(n, -1, ct)
    temp_inputs = torch.gt(temp_inputs, threhold).float()
    tp = torch.sum(temp_target[..., :-1] * temp_inputs, axis=[0, 1])
    fp = torch.sum(temp_inputs, axis=[0, 1]) - tp
    fn = torch.sum(temp_target[..., :-1], axis=[0, 1]) - tp
    score = ((1 + beta**2) * tp + smooth) / ((1 + beta**2) * tp + beta**2 * fn + fp + smooth)
    return torch.mean(score)


def usual_path(logits: torch.Tensor, pngs_np: list[np.ndarray], pngs, num_classes, device):
    """Loader one-hot + collate, then ``utils_fit.fit_one_epoch``'s loss, backward and f_score."""
    labels = usual_collate_one_hot([usual_one_hot(png, num_classes) for png in pngs_np])
    labels = labels.to(device)
    weights = torch.from_numpy(np.ones([num_classes], np.float32)).to(device)
    logits.grad = None
    loss = usual_ce_loss(logits, pngs, weights, num_classes=num_classes)
    loss = loss + usual_dice_loss(logits, labels)
    with torch.no_grad():
        score = usual_f_score(logits, labels)
    loss.backward()
    return loss.item(), score.item()


# ----------------------------------------------------------------------------------------------
# ours


def metric_update(matrix: ConfusionMatrix, logits, labels) -> None:
    """As the trainer's per-batch diagnostics do it: ``predicted_classes`` (argmax's classes,
    faster on the CPU) and one bincount, without the label-range check the cross-entropy already
    made."""
    matrix.matrix += MF.confusion_matrix(
        MF.predicted_classes(logits),
        labels,
        matrix.num_classes,
        matrix.ignore_index,
        validate=False,
    )


def metric_update_checked(matrix: ConfusionMatrix, logits, labels) -> None:
    """As evaluation does it: ``ConfusionMatrix.update``, which also checks the label range."""
    matrix.update(MF.predicted_classes(logits), labels)


def our_path(logits, labels, loss_fn, matrix: ConfusionMatrix, update=metric_update):
    logits.grad = None
    loss, _ = loss_fn(logits, labels)
    loss.backward()
    if update is not None:
        update(matrix, logits.detach(), labels)
    return float(loss)


def our_all_tasks(logits: dict, batch: dict, criterion, matrices: dict, update=metric_update):
    for value in logits.values():
        value.grad = None
    loss, _ = criterion(logits, batch["labels"], batch["has_label"], batch["labelled"])
    loss.backward()
    for task, matrix in matrices.items():
        update(matrix, logits[task].detach(), batch["labels"][task])


def compare_usual(num_classes: int, args, size: int, device) -> common.Timings:
    """Ours, ours without metrics, ours with the label check, and the usual path."""
    g = torch.Generator().manual_seed(num_classes)
    labels = torch.randint(0, num_classes, (args.batch, size, size), generator=g)
    labels[:, -4:, :] = common.IGNORE_INDEX  # a border to ignore, as VOC has
    theirs_png = labels.clone()
    theirs_png[theirs_png >= num_classes] = num_classes  # their loader's mapping (not timed)
    pngs_np = [x.numpy().astype(np.uint8) for x in theirs_png]
    labels, theirs_png = labels.to(device), theirs_png.to(device)
    logits = torch.randn(args.batch, num_classes, size, size, generator=g).to(device)
    logits.requires_grad_()
    loss_fn = common.task_loss().to(device)
    matrix = ConfusionMatrix([str(i) for i in range(num_classes)], common.IGNORE_INDEX, device)
    # Same data, same cross-entropy: the re-implementation's CE equals ours.
    with torch.no_grad():
        weights = torch.ones(num_classes, device=device)
        ce_theirs = usual_ce_loss(logits, theirs_png, weights, num_classes)
        ce_ours = F.cross_entropy(logits, labels, ignore_index=common.IGNORE_INDEX)
    torch.testing.assert_close(ce_theirs, ce_ours)
    return common.alternate(
        {
            "ours": lambda: our_path(logits, labels, loss_fn, matrix),
            "ours, loss only": lambda: our_path(logits, labels, loss_fn, matrix, None),
            "ours, checked": lambda: our_path(
                logits, labels, loss_fn, matrix, metric_update_checked
            ),
            "usual": lambda: usual_path(logits, pngs_np, theirs_png, num_classes, device),
        },
        reps=args.reps,
        warmup=args.warmup,
        device=device,
        label=f"losses C={num_classes}",
    )


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--encoder", default=None, help="step model: default resnet50 (quick: resnet18)")
    p.add_argument("--size", type=int, default=None, help="default 256 (quick: 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, nargs="+", default=[2, 4, 21])
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=2)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet50")
    size = args.size or (32 if args.quick else 256)
    precision = common.default_precision(device)
    rows, ratios, targets, tables = [], {}, {}, []

    # 1. share of a training step, all tasks together
    batch = common.synthetic_batch(MODALITIES, TASKS, batch=args.batch, size=size, device=device)
    model = common.build_ours(
        {m: encoder for m in MODALITIES}, modalities=MODALITIES, tasks=TASKS
    ).to(device)
    criterion = common.multitask_loss(TASKS).to(device)
    optimizer = common.trainer_optimizer(model)
    logits = {
        t: torch.randn(args.batch, k, size, size, device=device, requires_grad=True)
        for t, k in TASKS.items()
    }
    matrices = {
        t: ConfusionMatrix([str(i) for i in range(k)], 255, device) for t, k in TASKS.items()
    }
    variants = {
        f"step/{prec}": common.ours_step(model, criterion, batch, prec, device, optimizer=optimizer)
        for prec in common.PRECISIONS
    }
    variants["loss+metrics"] = lambda: our_all_tasks(logits, batch, criterion, matrices)
    variants["loss+metrics, checked"] = lambda: our_all_tasks(
        logits, batch, criterion, matrices, metric_update_checked
    )
    timings = common.alternate(
        variants, reps=args.reps, warmup=args.warmup, device=device, label="losses share"
    )
    noise = timings.spreads()
    share_rows = []
    for prec in common.PRECISIONS:
        share = timings.ratio("loss+metrics", f"step/{prec}")
        checked = timings.ratio("loss+metrics, checked", f"step/{prec}")
        key = f"share/{prec}"
        ratios[key] = share
        ratios[f"share_checked/{prec}"] = checked
        targets[key] = common.target(share, "<=", SHARE_TARGET)
        rows.append(
            {
                "part": "share",
                "precision": prec,
                "step_s": timings.median(f"step/{prec}"),
                "loss_metrics_s": timings.median("loss+metrics"),
                "share": share,
                "share_checked": checked,
            }
        )
        share_rows.append(
            [
                prec + (" (default here)" if prec == precision else ""),
                timings.median(f"step/{prec}"),
                timings.median("loss+metrics") * 1e3,
                f"{share:.2%}",
                share <= SHARE_TARGET,
                timings.median("loss+metrics, checked") * 1e3,
                f"{checked:.2%}",
            ]
        )
    tables.append(
        common.table(
            [
                "step precision",
                "step s",
                "loss + metrics ms",
                "share",
                f"≤ {SHARE_TARGET:.0%}",
                "with label check (evaluation) ms",
                "its share",
            ],
            share_rows,
        )
    )
    del model, optimizer, variants

    # 2. vs the usual path, one task of C classes
    compare_rows = []
    for num_classes in args.classes:
        timings = compare_usual(num_classes, args, size, device)
        noise |= {f"{k}/C={num_classes}": v for k, v in timings.spreads().items()}
        speedup = timings.ratio("usual", "ours")
        checked = timings.ratio("usual", "ours, checked")
        key = f"speedup/C={num_classes}"
        ratios[key] = speedup
        ratios[f"speedup_checked/C={num_classes}"] = checked
        targets[key] = common.target(speedup, ">=", SPEEDUP_TARGET)
        rows.append(
            {
                "part": "vs_usual",
                "classes": num_classes,
                "ours_ms": timings.median("ours") * 1e3,
                "usual_ms": timings.median("usual") * 1e3,
                "speedup": speedup,
                "ours_loss_only_ms": timings.median("ours, loss only") * 1e3,
                "ours_checked_ms": timings.median("ours, checked") * 1e3,
                "speedup_checked": checked,
            }
        )
        compare_rows.append(
            [
                num_classes,
                timings.median("ours") * 1e3,
                timings.median("usual") * 1e3,
                speedup,
                speedup >= SPEEDUP_TARGET,
                timings.median("ours, loss only") * 1e3,
                timings.median("ours, checked") * 1e3,
                checked,
            ]
        )
    tables.append(
        common.table(
            [
                "classes C",
                "ours ms",
                "usual path ms",
                "speedup",
                f"≥ {SPEEDUP_TARGET:g}×",
                "ours, loss only ms",
                "ours with label check ms",
                "speedup with label check",
            ],
            compare_rows,
        )
    )
    common.report(
        "losses",
        args,
        settings={
            "share_model": {m: encoder for m in MODALITIES},
            "tasks": TASKS,
            "size": size,
            "batch": args.batch,
            "classes": args.classes,
            "usual_path": "bubbliiiing/unet-pytorch re-implementation (one-hot in the loader, "
            "CE_Loss + Dice_loss + f_score)",
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=noise,
        tables=tables,
        notes=[
            f"share: all {len(TASKS)} tasks' loss forward + backward (to the logits) and "
            f"confusion-matrix updates vs one training step of the {encoder} trunk model",
            f"vs usual path: {args.batch}×{size}×{size}, logits float32; checked: the "
            "re-implementation's cross-entropy equals ours on the same data",
        ],
    )


if __name__ == "__main__":
    main()
