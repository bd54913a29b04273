"""From a batch of planes to class maps: whole-image or sliding-window inference, with flips.

Both ``evaluate`` and ``predict`` segment through :func:`segment_planes`, so the same checkpoint,
input and :class:`Inference` options give the same masks in both.

- **Whole image** (the default, and whenever an image fits one window): one forward pass.
- **Sliding window** (``window: N``): windows of ``N×N`` placed ``N·(1 − overlap)`` apart, the
  last flush with the image's edge (nnU-Net's placement); each window's softmax probabilities are
  weighted by a Gaussian centred on it (σ = N/8, as nnU-Net and MONAI do: a network is least sure
  near a window's border) and summed. Rows of windows are done top to bottom and the rows of
  pixels that no later window touches are arg-maxed and freed at once, so memory follows
  ``window × width``, not the image.
- **Test-time flips** (``tta: [hflip, vflip]``): every combination of the listed flips (for two:
  none, h, v, h+v) is segmented, flipped back, and the probabilities averaged (per window when
  windowing, as nnU-Net mirrors each patch).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from mmseg_heads.config.schema import config_schema
from mmseg_heads.data.transforms import TTA_FLIPS
from mmseg_heads.engine.precision import autocast
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.metrics.functional import predicted_classes
from mmseg_heads.schema import Node

#: Gaussian σ of the window weights, as a fraction of the window (nnU-Net's 1/8).
SIGMA_SCALE = 1 / 8

Images = dict[str, torch.Tensor]
OnGates = Callable[[dict], None]


@dataclass(frozen=True)
class Inference:
    """How planes are pushed through the network (the config's ``eval`` section).

    Attributes:
        window: side of the sliding window in pixels (a multiple of the model's largest stride),
            or ``None`` for whole-image inference.
        overlap: fraction of a window shared with its neighbour, ``0 ≤ overlap < 1``.
        tta: test-time flips, names of :data:`TTA_FLIPS`.
    """

    window: int | None = None
    overlap: float = 0.5
    tta: tuple[str, ...] = ()
    #: The data spec's ``inside`` rules on the class maps: ``on`` (masks and scores nested),
    #: ``off``, or ``both`` (masks and headline scores as the model gives them, and the nested
    #: tasks' scores with nesting beside them).
    nesting: str = "off"
    #: The data spec's rules (:meth:`~mmseg_heads.data.spec.DataSpec.nesting`).
    nesting_rules: tuple = ()

    @classmethod
    def from_eval(cls, section: dict, nesting_rules: tuple = ()) -> Inference:
        """The options of a validated config's ``eval`` section, with the spec's nesting rules."""
        return cls(
            section["window"],
            section["overlap"],
            tuple(section["tta"]),
            section["nesting"],
            nesting_rules,
        )

    def without_nesting(self) -> Inference:
        return replace(self, nesting="off")

    @property
    def nests(self) -> bool:
        """Whether masks are nested (``on``, and the spec declares rules)."""
        return self.nesting == "on" and bool(self.nesting_rules)

    def with_overrides(
        self,
        window: int | None = None,
        overlap: float | None = None,
        tta: tuple[str, ...] | None = None,
    ) -> Inference:
        """These options with the ones given (command-line flags) replaced, each checked by the
        config schema's ``eval`` field of the same name (a flip named twice counts once).

        Raises:
            ConfigError: the schema's message, naming the flag (``--window``, ``--overlap``,
                ``--tta``).
        """
        if tta is not None:
            tta = tuple(dict.fromkeys(tta))
        given = {"window": window, "overlap": overlap, "tta": tta}
        fields = config_schema().fields["eval"].fields
        for name, value in given.items():
            if value is not None:
                _check_flag(fields[name], list(value) if name == "tta" else value, f"--{name}")
        return replace(
            self,
            window=self.window if window is None else window,
            overlap=self.overlap if overlap is None else overlap,
            tta=self.tta if tta is None else tta,
        )

    def check(self, max_stride: int, *, field: str = "eval.window", file=None) -> None:
        """A window must be a whole number of the network's largest stride.

        Raises:
            UserError: naming ``field`` (``--window`` for a flag) and ``file``.
        """
        if self.window is not None and self.window % max_stride:
            raise UserError(
                f"{self.window} is not a multiple of the model's largest stride {max_stride} "
                f"(try {max(max_stride, round(self.window / max_stride) * max_stride)})",
                field=field,
                file=file,
            )

    def describe(self) -> dict:
        """What a report records: ``{"window", "overlap", "tta", "nesting"}`` (overlap only with
        a window; nesting ``off`` where the spec declares no rule)."""
        return {
            "window": self.window,
            "overlap": self.overlap if self.window is not None else None,
            "tta": list(self.tta),
            "nesting": self.nesting if self.nesting_rules else "off",
        }


#: Whole-image inference without flips: what every run did before ``eval.window``/``eval.tta``.
WHOLE_IMAGE = Inference()


def _check_flag(node: Node, value, flag: str) -> None:
    """``value`` checked by the schema ``node`` of the config key the flag replaces.

    Raises:
        ConfigError: the schema's messages, each naming ``flag`` (an item of a list too:
            ``--tta hflip,rot90`` is one value).
    """
    problems: list[UserError] = []
    node.validate(value, flag, problems)
    if problems:
        raise ConfigError([UserError(problem.message, field=flag) for problem in problems])


def apply_nesting(classes: dict[str, torch.Tensor], rules: tuple) -> dict[str, torch.Tensor]:
    """Class maps with each nested task's foreground kept only inside its parents' classes
    (``rules`` parents first, so a task is held inside its parent's nested map)."""
    out = dict(classes)
    for task, parents in rules:
        if task not in out:
            continue
        inside = torch.ones_like(out[task], dtype=torch.bool)
        for parent, indices in parents:
            allowed = torch.tensor(indices, device=out[parent].device)
            inside &= torch.isin(out[parent], allowed)
        out[task] = torch.where(inside, out[task], torch.zeros_like(out[task]))
    return out


def flip_variants(tta: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Every combination of the named flips as the dims to mirror, the identity ``()`` first."""
    dims = [TTA_FLIPS[name] for name in tta]
    return [c for k in range(len(dims) + 1) for c in itertools.combinations(dims, k)]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering ``size`` pixels, evenly spread, the last at the edge."""
    if size <= window:
        return [0]
    step = window * (1 - overlap)
    count = math.ceil((size - window) / step) + 1
    return [round(i * (size - window) / (count - 1)) for i in range(count)]


def gaussian_weights(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``height×width`` weights, 1 at the centre, falling with σ = SIGMA_SCALE × side."""

    def profile(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-(x**2) / (2 * (n * SIGMA_SCALE) ** 2))

    # Never 0 (exp(-8) at the edges): every pixel of a window keeps a positive weight.
    return profile(height)[:, None] * profile(width)[None, :]


def probabilities(
    model: nn.Module,
    images: Images,
    variants: list[tuple[int, ...]],
    precision: str,
    device: torch.device,
    on_gates: OnGates | None = None,
) -> dict[str, torch.Tensor]:
    """Softmax probabilities per task, ``N×K×H×W`` float32, averaged over the flip variants."""
    total: dict[str, torch.Tensor] = {}
    for dims in variants:
        flipped = {m: x.flip(dims) if dims else x for m, x in images.items()}
        logits = _forward(model, flipped, precision, device, on_gates)
        for task, value in logits.items():
            p = value.float().softmax(1)
            p = p.flip(dims) if dims else p
            total[task] = total[task] + p if task in total else p
    return {task: p / len(variants) for task, p in total.items()}


def _forward(model, images, precision, device, on_gates) -> dict[str, torch.Tensor]:
    with autocast(precision, device):
        if on_gates is None:
            return model(images)
        logits, gates = model(images, return_gates=True)
    on_gates(gates)
    return logits


def segment_planes(
    model: nn.Module,
    images: Images,
    inference: Inference,
    *,
    precision: str,
    device: torch.device,
    batch_size: int = 8,
    on_gates: OnGates | None = None,
) -> dict[str, torch.Tensor]:
    """Class indices per task for a batch of planes.

    Args:
        images: ``{modality: N×C×H×W}`` on ``device``, ``H`` and ``W`` multiples of the model's
            largest stride (the caller pads); a missing modality is simply absent.
        batch_size: windows per forward pass when windowing.
        on_gates: called with the model's gate weights of every forward pass (for the report).

    Returns:
        ``{task: N×H×W int64}``, nested as ``inference.nests`` says.
    """
    classes = _segment(model, images, inference, precision, device, batch_size, on_gates)
    return apply_nesting(classes, inference.nesting_rules) if inference.nests else classes


def _segment(model, images, inference, precision, device, batch_size, on_gates):
    first = next(iter(images.values()))
    height, width = first.shape[-2:]
    window = inference.window
    if window is None or (height <= window and width <= window):
        if not inference.tta:  # the plain arg-max of the logits: no softmax pass over the image
            return {
                t: predicted_classes(v)
                for t, v in _forward(model, images, precision, device, on_gates).items()
            }
        variants = flip_variants(inference.tta)
        return {
            t: predicted_classes(p)
            for t, p in probabilities(model, images, variants, precision, device, on_gates).items()
        }
    masks = [
        _sliding_window(
            model,
            {m: x[n] for m, x in images.items()},
            inference,
            precision,
            device,
            batch_size,
            on_gates,
        )
        for n in range(first.shape[0])
    ]
    return {task: torch.stack([m[task] for m in masks]) for task in masks[0]}


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sliding_window(
    model: nn.Module,
    image: Images,
    inference: Inference,
    precision: str,
    device: torch.device,
    batch_size: int,
    on_gates: OnGates | None,
) -> dict[str, torch.Tensor]:
    """One plane (``{modality: C×H×W}``) windowed: ``{task: H×W int64}``."""
    height, width = next(iter(image.values())).shape[-2:]
    win_h, win_w = min(inference.window, height), min(inference.window, width)
    rows = window_starts(height, win_h, inference.overlap)
    columns = window_starts(width, win_w, inference.overlap)
    weights = gaussian_weights(win_h, win_w, device)
    variants = flip_variants(inference.tta)
    out: dict[str, torch.Tensor] = {}
    band: dict[str, torch.Tensor] = {}  # weighted sums of the rows [top, top + win_h)
    top = 0
    for r, y in enumerate(rows):
        for chunk in _chunks(columns, batch_size):
            crops = {
                m: torch.stack([x[:, y : y + win_h, c : c + win_w] for c in chunk])
                for m, x in image.items()
            }
            probs = probabilities(model, crops, variants, precision, device, on_gates)
            for task, p in probs.items():
                if task not in band:
                    band[task] = p.new_zeros(p.shape[1], win_h, width)
                    out[task] = torch.empty(height, width, dtype=torch.int64, device=device)
                for j, c in enumerate(chunk):
                    band[task][:, y - top : y - top + win_h, c : c + win_w] += p[j] * weights
        done = rows[r + 1] if r + 1 < len(rows) else height
        for task, sums in band.items():
            # The weighted sum's arg-max is the weighted mean's: every weight is positive.
            out[task][top:done] = sums[:, : done - top].argmax(0)
            band[task] = torch.cat(
                [sums[:, done - top :], sums.new_zeros(sums.shape[0], done - top, width)], dim=1
            )
        top = done
    return out
