"""Report figures with matplotlib (headless, Agg). Each function returns PNG bytes.

matplotlib is the ``report`` extra: without it, :func:`available` is False and the HTML page
shows tables only.
"""

from __future__ import annotations

import io

import numpy as np

from mmseg_heads.palette import default_palette
from mmseg_heads.report.tables import per_case_classes


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def class_scores(task: str, summary: dict) -> bytes:
    """Precision, recall and F per class; absent classes are marked, not drawn as 0."""
    plt = _pyplot()
    classes = summary["classes"]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(classes)), 3))
    for offset, key in zip((-0.27, 0, 0.27), ("precision", "recall", "f"), strict=True):
        values = [summary["per_class"][c][key] for c in classes]
        ax.bar(x + offset, [v if v is not None else 0 for v in values], width=0.27, label=key)
    for i, c in enumerate(classes):
        if summary["per_class"][c]["absent"]:
            ax.text(i, 0.05, "absent", ha="center", rotation=90, fontsize=8)
    ax.set_xticks(x, classes, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{task}: per-class scores (F-beta, beta={summary['beta']:g})")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    return _png(fig)


def confusion(task: str, summary: dict) -> bytes:
    """Row-normalised confusion matrix (rows truth, columns prediction) with the counts."""
    plt = _pyplot()
    matrix = np.asarray(summary["confusion_matrix"], dtype=np.float64)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    classes = summary["classes"]
    size = 1.0 + 0.8 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if normalised[i, j] > 0.6 else "black"
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}\n{int(matrix[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"{task}: confusion (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def training_curves(task: str, records: list[dict]) -> bytes | None:
    """Each loss term of ``task`` (train) and its validation macro foreground F, per epoch."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if "tasks" in r and r.get("split") != "train_batch"]
    if not train:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.8))
    for key in sorted(k for k in train[0] if k == task or k.startswith(f"{task}/")):
        left.plot([r["epoch"] for r in train], [r.get(key) for r in train], label=key)
    left.set_xlabel("epoch")
    left.set_title(f"{task}: training loss")
    left.legend(fontsize=7)
    right.plot(
        validation_epochs(train, val),
        [r["tasks"][task]["macro_foreground_f"] for r in val],
        marker="o",
    )
    right.set_ylim(0, 1)
    right.set_xlabel("epoch")
    right.set_title(f"{task}: validation macro foreground F")
    return _png(fig)


def validation_epochs(train: list[dict], val: list[dict]) -> list[float]:
    """Where each validation line falls on the epoch axis: its epoch, or, where the lines carry
    their ``step`` (``train.val_every`` validates inside epochs), that epoch's share of steps
    done before it (step 6 of an epoch of steps 5-8: 1.5)."""
    ends = {r["epoch"]: r["step"] for r in train if "step" in r}
    ends.setdefault(0, 0)
    places: list[float] = []
    for r in val:
        start, end = ends.get(r["epoch"] - 1), ends.get(r["epoch"])
        if "step" not in r or start is None or end is None or end <= start:
            places.append(r["epoch"])
        else:
            places.append(r["epoch"] - 1 + (r["step"] - start) / (end - start))
    return places


def _display(image: np.ndarray) -> np.ndarray:
    """A normalised C×H×W image as something imshow can draw (RGB, or grey)."""
    low, high = np.percentile(image, [1, 99])
    scaled = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    return np.moveaxis(scaled[:3], 0, -1) if scaled.shape[0] >= 3 else scaled[0]


def report_palette(summary: dict) -> np.ndarray:
    """A report task's class colours as a ``classes × 3`` array in 0..1: its ``palette`` (the data
    spec's ``colors`` over the default palette), or, for a report.json written before reports had
    one, the default palette ``predict`` uses."""
    palette = summary.get("palette") or default_palette(len(summary["classes"]))
    return np.asarray(palette, dtype=np.float64) / 255.0


def prediction_rgba(pred: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``H×W×4``: each pixel in its predicted class's colour, background (class 0) transparent."""
    colours = palette[np.clip(pred, 0, len(palette) - 1)]
    alpha = np.where(pred > 0, 0.45, 0.0)
    return np.dstack([colours, alpha])


def _overlay(
    ax, image: np.ndarray, pred: np.ndarray, truth: np.ndarray, palette: np.ndarray
) -> None:
    shown = _display(image)
    ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray")
    ax.imshow(prediction_rgba(pred, palette))
    valid = np.where(truth == 255, 0, truth)
    if valid.max() > 0:
        ax.contour(
            valid > 0, levels=[0.5], colors="white", linewidths=0.8
        )  # white: no class colour is white
    ax.set_xticks([])
    ax.set_yticks([])


def overlays(
    task: str,
    examples: dict,
    picks: dict[str, list[str]],
    scores: dict,
    annotated_on: list[str],
    palette: np.ndarray,
) -> bytes | None:
    """For each worst/best sample: prediction (``palette``, from :func:`report_palette`) and truth
    (white contour) on every modality."""
    rows = [(end, sample_id) for end in ("worst", "best") for sample_id in picks.get(end, [])]
    if not rows:
        return None
    plt = _pyplot()
    modalities = list(next(iter(examples.values()))["images"])
    fig, axes = plt.subplots(
        len(rows), len(modalities), figsize=(2.6 * len(modalities), 2.6 * len(rows)), squeeze=False
    )
    for r, (end, sample_id) in enumerate(rows):
        sample = examples[sample_id]
        for c, modality in enumerate(modalities):
            ax = axes[r][c]
            _overlay(
                ax,
                sample["images"][modality],
                sample["pred"][task],
                sample["labels"][task],
                palette,
            )
            star = " ★ annotated" if modality in annotated_on else ""
            ax.set_title(f"{modality}{star}", fontsize=9, color="darkred" if star else "black")
            if c == 0:
                ax.set_ylabel(f"{end}: {sample_id}\nF {scores.get(sample_id) or 0:.2f}", fontsize=8)
    fig.suptitle(
        f"{task}: prediction (colour) and truth (white contour) on each modality", fontsize=10
    )
    return _png(fig)


def _strong(value: float, limit: float | None) -> bool:
    """Whether a heatmap cell is dark enough to need white text."""
    if np.isnan(value):
        return False
    return abs(value) > 0.6 * limit if limit else value < 0.5  # viridis is dark at the low end


def heatmap(
    title: str,
    rows: list[str],
    columns: list[str],
    values: np.ndarray,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    centre: bool = False,
) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(columns), 0.9 + 0.5 * len(rows)))
    limit = np.nanmax(np.abs(values)) if centre and np.isfinite(values).any() else None
    kwargs = {"vmin": -limit, "vmax": limit} if limit else {"vmin": 0, "vmax": 1}
    ax.imshow(values, cmap=cmap, aspect="auto", **kwargs)
    for i in range(len(rows)):
        for j in range(len(columns)):
            text = "—" if np.isnan(values[i, j]) else fmt.format(values[i, j])
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if _strong(values[i, j], limit) else "black",
            )
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def per_case_boxplot(report: dict, task: str) -> bytes | None:
    """Per foreground class, a box of the per-case Dice (left) and HD95 (right) with each case as
    a jittered point; only defined values are drawn, and a class without any shows "no case".
    ``None`` when no class of the task has a defined Dice or HD95 in any case."""
    entry = report["per_case"][task]
    classes = per_case_classes(entry)
    values = {
        key: [
            [
                float(scores[name][key])
                for scores in entry.get("cases", {}).values()
                if scores.get(name, {}).get(key) is not None
            ]
            for name in classes
        ]
        for key in ("dice", "hd95")
    }
    if not any(v for per_class in values.values() for v in per_class):
        return None
    plt = _pyplot()
    rng = np.random.default_rng(0)  # the same jitter every time: reports diff cleanly
    width = max(3.0, 0.9 * len(classes) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 3))
    unit = entry.get("unit", "mm")
    titles = {"dice": "Dice per case", "hd95": f"HD95 per case ({unit})"}
    for ax, key in zip(axes, ("dice", "hd95"), strict=True):
        drawn = [(i, v) for i, v in enumerate(values[key]) if v]
        if drawn:
            ax.boxplot(
                [v for _, v in drawn],
                positions=[i for i, _ in drawn],
                widths=0.5,
                showfliers=False,  # every case is drawn as a point already
                medianprops={"color": "black"},
            )
            for i, v in drawn:
                x = i + rng.uniform(-0.15, 0.15, len(v))
                ax.scatter(x, v, s=14, alpha=0.7, color="tab:blue", zorder=3)
        for i, v in enumerate(values[key]):
            if not v:
                ax.text(i, 0.5, "no case", ha="center", va="center", fontsize=8, color="grey",
                        transform=ax.get_xaxis_transform())  # fmt: skip
        ax.set_xticks(range(len(classes)), classes, rotation=20)
        ax.set_xlim(-0.6, len(classes) - 0.4)
        if key == "dice":
            ax.set_ylim(-0.03, 1.03)
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(f"{task}: {titles[key]}", fontsize=10)
    return _png(fig)
