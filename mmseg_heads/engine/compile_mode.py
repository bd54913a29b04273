"""``train.compile``: whether training steps run through ``torch.compile``, and in which mode.

``auto`` (the default) never compiles on a CPU, where oneDNN's convolutions dominate and the
compiler buys nothing (docs/performance.md §9). On CUDA a short probe at start-up times a
training step of a copy of the model, with random inputs of the run's batch and crop, eager and
compiled in each mode of :data:`PROBED` (``reduce-overhead`` replays CUDA Graphs: it pays for
small, launch-bound crops), and keeps the fastest; a compiled mode must be at least
:data:`GAIN` faster than eager to be chosen. ``true`` is the default mode, ``false`` eager; a
mode's name asks for it. The run log says what was chosen and why, ``inspect`` what will be.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mmseg_heads.config.schema import COMPILE_MODES
from mmseg_heads.engine.batch_size import Shapes, training_step
from mmseg_heads.engine.distributed import World, all_reduce_max

log = logging.getLogger(__name__)

#: What ``auto`` times on CUDA (None: eager). max-autotune is left out: its tuning takes minutes.
PROBED: tuple[str | None, ...] = (None, "default", "reduce-overhead")
#: A compiled mode must be this much faster than eager (timing noise, the compile's own cost).
GAIN = 0.05
WARMUP_STEPS, TIMED_STEPS = 3, 5


@dataclass(frozen=True)
class CompileChoice:
    """``mode``: the ``torch.compile`` mode, None for eager; ``reason``: why, for the log."""

    mode: str | None
    reason: str

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.mode is None:
            return module
        if self.mode == "default":  # torch.compile's own default: no mode argument at all
            return torch.compile(module)
        return torch.compile(module, mode=self.mode)

    def text(self) -> str:
        return f"{self.mode or 'off'} ({self.reason})"


def fixed_choice(setting: bool | str, device: torch.device) -> CompileChoice | None:
    """The choice a setting makes without measuring; None where ``auto`` must probe."""
    if setting is False:
        return CompileChoice(None, "train.compile false")
    if setting is True:
        return CompileChoice("default", "train.compile true")
    if setting in COMPILE_MODES:
        return CompileChoice(str(setting), f"train.compile {setting}")
    if device.type != "cuda":
        return CompileChoice(None, f"auto: never on {device.type.upper()}, no gain measured there")
    return None


def describe(setting: bool | str, device: torch.device) -> str:
    """What ``inspect`` says: the choice, or how ``auto`` will make it."""
    fixed = fixed_choice(setting, device)
    if fixed is not None:
        return fixed.text()
    probed = ", ".join(mode or "eager" for mode in PROBED)
    return f"auto: a probe at start times {probed} and keeps the fastest"


def choose_compile(
    setting: bool | str,
    device: torch.device,
    seconds_per_step: Callable[[str | None], float],
    world: World | None = None,
) -> CompileChoice:
    """``seconds_per_step(mode)`` times one mode (``inf`` where it fails); under torchrun every
    process takes the slowest process's time of each mode, so all choose alike."""
    fixed = fixed_choice(setting, device)
    if fixed is not None:
        return fixed
    times = {}
    for mode in PROBED:
        seconds = seconds_per_step(mode)
        times[mode] = seconds if world is None else all_reduce_max(seconds, world)
    fastest = min(times, key=times.__getitem__)
    if fastest is not None and times[fastest] > times[None] * (1 - GAIN):
        fastest = None
    measured = ", ".join(f"{mode or 'eager'} {times[mode] * 1e3:.1f} ms" for mode in PROBED)
    return CompileChoice(fastest, f"auto: a step took {measured}")


def step_timer(
    model: nn.Module, shapes: Shapes, batch_size: int, device: torch.device, precision: str
) -> Callable[[str | None], float]:
    """``seconds_per_step(mode)``: the median time of a forward + cross-entropy + backward
    step of a copy of ``model`` under ``mode``, after warm-up steps (which compile), under a
    forked RNG: the run's weights, BatchNorm statistics and random streams stay as they were."""

    def seconds_per_step(mode: str | None) -> float:
        probe = copy.deepcopy(model).train()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                run = CompileChoice(mode, "probe").wrap(probe)
                for _ in range(WARMUP_STEPS):
                    training_step(run, shapes, batch_size, device, precision)
                times = []
                for _ in range(TIMED_STEPS):
                    _synchronize(device)
                    started = time.perf_counter()
                    training_step(run, shapes, batch_size, device, precision)
                    _synchronize(device)
                    times.append(time.perf_counter() - started)
            return statistics.median(times)
        except Exception as error:  # a mode that does not compile here is not chosen
            log.warning("train.compile auto: %s failed to run (%s)", mode or "eager", error)
            return float("inf")
        finally:
            del probe
            torch._dynamo.reset()  # the run compiles its own model afresh

    return seconds_per_step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
