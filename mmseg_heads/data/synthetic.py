"""The demo's synthetic two-modality data set, written as real files with its own data spec.

``optical`` (RGB) shows circles, squares and triangles over a textured background; each kind also
has its own colour and texture, as real objects do, so a small network learns them in minutes.
``thermal`` (grey) shows hot spots that are **not visible in optical**, plus faint, noisy traces of
the objects. Task ``shapes`` (annotated on optical) is a palette index PNG; task ``hotspots``
(annotated on thermal) is a 0/255 mask read with ``threshold: 127.5``, as the seed's code does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("background", "circle", "square", "triangle")
# Mean RGB of each kind; per-pixel noise and a per-kind texture sit on top.
SHAPE_COLOURS = {1: (200, 70, 60), 2: (70, 180, 80), 3: (70, 90, 200)}
PALETTE = [0, 0, 0, 230, 80, 60, 60, 190, 80, 70, 100, 230, 255, 255, 255]

DATA_SPEC = """\
# The demo's data spec, written by `mmseg-heads demo`: an example of the format (docs/data_spec.md).
name: demo
modalities:
  optical: {{files: "optical/{{id}}.png", channels: 3, normalize: zscore}}
  thermal: {{files: "thermal/{{id}}.png", channels: 1, normalize: zscore}}
tasks:
  shapes:
    labels: "labels/shapes/{{id}}.png"      # palette PNG of class indices
    classes: [background, circle, square, triangle]
    annotated_on: [optical]
  hotspots:
    labels: "labels/hotspots/{{id}}.png"    # binary mask saved as 0/255
    classes: [background, hotspot]
    threshold: 127.5
    annotated_on: [thermal]
splits:
  train: {{ids: splits/train.txt}}
  val:   {{ids: splits/val.txt}}
"""


def _shape_mask(kind: int, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 1:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 2:
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    # upright triangle: apex at the top, base at the bottom
    top, bottom = cy - r, cy + r * 0.8
    half_width = (yy - top) / (bottom - top) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def _texture(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 1:  # stripes
        return 25 * np.sin(xx * 0.9 + phase)
    if kind == 2:  # checks
        return 25 * np.sign(np.sin(xx * 0.8 + phase) * np.sin(yy * 0.8))
    return 25 * np.sin((xx + yy) * 0.6 + phase)  # diagonal


def make_sample(
    size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One ``(optical H×W×3 uint8, thermal H×W uint8, shapes H×W uint8, hotspots H×W uint8 0/255)``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Background: a smooth random colour gradient plus coarse texture and pixel noise.
    base = rng.uniform(90, 150, 3)
    gradient = (yy / size - 0.5)[..., None] * rng.uniform(-40, 40, 3)
    coarse = np.repeat(np.repeat(rng.normal(0, 12, (size // 8, size // 8, 3)), 8, 0), 8, 1)
    optical = base + gradient + coarse
    shapes = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(1, 4))
        r = rng.uniform(size * 0.1, size * 0.18)
        cy, cx = rng.uniform(r, size - r, 2)
        mask = _shape_mask(kind, size, cy, cx, r)
        colour = np.asarray(SHAPE_COLOURS[kind]) + rng.normal(0, 15, 3)
        optical[mask] = colour + _texture(kind, size, rng)[mask][:, None]
        shapes[mask] = kind
    optical += rng.normal(0, 22, optical.shape)

    # Thermal: hot spots independent of the objects, faint object traces, noise.
    thermal = 80 + 25 * (xx / size) + rng.normal(0, 18, (size, size))
    thermal += 12 * (shapes > 0)
    hot = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(size * 0.06, size * 0.12)
        cy, cx = rng.uniform(r, size - r, 2)
        distance = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        thermal += 70 * np.clip(1.3 - distance / r, 0, 1)
        hot |= distance <= r
    return (
        np.clip(optical, 0, 255).astype(np.uint8),
        np.clip(thermal, 0, 255).astype(np.uint8),
        shapes,
        (hot * 255).astype(np.uint8),
    )


def write_demo_dataset(
    root: str | Path, *, train: int = 96, val: int = 32, size: int = 64, seed: int = 0
) -> Path:
    """Write the demo data set under ``root`` and return its data spec path (deterministic in ``seed``)."""
    root = Path(root)
    for folder in ("optical", "thermal", "labels/shapes", "labels/hotspots", "splits"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"img{i:04d}" for i in range(train + val)]
    for sample_id in ids:
        optical, thermal, shapes, hotspots = make_sample(size, rng)
        Image.fromarray(optical, "RGB").save(root / "optical" / f"{sample_id}.png")
        Image.fromarray(thermal, "L").save(root / "thermal" / f"{sample_id}.png")
        labels = Image.fromarray(shapes, "P")
        labels.putpalette(PALETTE)
        labels.save(root / "labels/shapes" / f"{sample_id}.png")
        Image.fromarray(hotspots, "L").save(root / "labels/hotspots" / f"{sample_id}.png")
    (root / "splits/train.txt").write_text("\n".join(ids[:train]) + "\n")
    (root / "splits/val.txt").write_text("\n".join(ids[train:]) + "\n")
    spec = root / "demo.yaml"
    spec.write_text(DATA_SPEC.format())
    return spec
