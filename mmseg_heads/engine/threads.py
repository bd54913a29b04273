"""How many CPU threads torch's operators use: the cores that are free, not all of them.

PyTorch's intra-op pool starts one OpenMP thread per core and every parallel operator waits at a
barrier for all of them. When another process holds one of those cores, the thread scheduled
there arrives late at every barrier and the whole step waits: on a 2-core machine next to one
busy process the demo trained ~29× slower with 2 threads, not 2× (issue 19; measured by
``bench/threads.py``). So ``train.threads: auto`` (the default) counts the cores this process may
use (its CPU affinity) that are idle right now, sampled over a short window, and uses that many
(at least 1). A number sets it; the choice is logged.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
#: How long the idle cores are sampled at start-up.
SAMPLE_SECONDS = 0.25
#: A core counts as free when at least this fraction of it is idle (rounded to whole cores).
FREE_FRACTION = 0.5


def usable_cores() -> int:
    """The cores this process may run on (its affinity; all cores where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """``(idle, total)`` jiffies of all cores from ``/proc/stat``; ``None`` off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return idle, sum(values[:8])


def idle_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of the machine's cores were idle over ``seconds`` (``None`` where unknown)."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_times()
    total = after[1] - before[1]
    if total <= 0:
        return None
    return (after[0] - before[0]) / total * (os.cpu_count() or 1)


def free_cores(cores: int, idle: float | None) -> int:
    """Whole free cores among ``cores`` usable ones, given ``idle`` idle cores (at least 1)."""
    if idle is None:
        return cores
    return max(1, min(cores, math.floor(idle + (1 - FREE_FRACTION))))


def choose_threads(setting: int | str) -> tuple[int, str]:
    """``(threads, why)`` for ``train.threads``: the number given, or the free usable cores."""
    cores = usable_cores()
    if setting != AUTO:
        return int(setting), f"train.threads {setting} ({cores} usable cores)"
    idle = idle_cores()
    threads = free_cores(cores, idle)
    if idle is None:
        return threads, f"auto: {cores} usable cores (idle time unknown here)"
    busy = cores - threads
    return threads, (
        f"auto: {threads} of {cores} usable cores"
        + (f" ({busy} busy with other work at start)" if busy else "")
        + "; set train.threads to choose"
    )


def configure_threads(setting: int | str) -> tuple[int, str]:
    """Set torch's intra-op threads as :func:`choose_threads` says; returns its answer."""
    threads, why = choose_threads(setting)
    torch.set_num_threads(threads)
    return threads, why


def training_threads(setting: int | str, started_with: int | None = None) -> int:
    """torch's CPU threads for training, logged: ``train.threads``, or with ``auto`` the cores
    free now; a resumed run keeps the count it started with (``started_with``): gradients differ
    in their last bits between thread counts, and a resume must reproduce the uninterrupted run."""
    if setting == AUTO and started_with is not None:
        torch.set_num_threads(started_with)
        log.info("threads: %d, as chosen when this run started", started_with)
        return started_with
    threads, why = configure_threads(setting)
    log.info("threads: %d (%s)", threads, why)
    return threads
