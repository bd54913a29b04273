"""Median seconds of a training step as the trainer takes it (Stepper.micro_batch + the
trainer's per-step bookkeeping), in the package tree given first (sys.argv[1]).

python one.py TREE SPEC OUT PRECISION
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1])  # this tree's mmseg_heads before the installed one

import torch  # noqa: E402
import yaml  # noqa: E402

import mmseg_heads  # noqa: E402
from mmseg_heads.config import load_config  # noqa: E402
from mmseg_heads.engine import steps  # noqa: E402
from mmseg_heads.engine.evaluator import to_device  # noqa: E402
from mmseg_heads.engine.loaders import train_loader  # noqa: E402
from mmseg_heads.engine.trainer import Trainer  # noqa: E402

torch.set_num_threads(1)
spec, out, precision = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
config = {
    "data": str(spec),
    "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}},
    "train": {
        "epochs": 1, "batch_size": 4, "crop": 128, "workers": 0, "precision": precision,
        "threads": 1, "seed": 0, "out": str(out),
    },
}  # fmt: skip
path = out.parent / (out.name + ".yaml")
path.write_text(yaml.safe_dump(config))
trainer = Trainer(load_config(path), progress=False)
loader = train_loader(trainer.dataset, trainer.config.train, 4, 1, trainer.world)
batches = [to_device(b, trainer.device) for b in loader][:4]
trainer._train_mode()
new = hasattr(steps, "foreground_tp_fp_fn")  # after the no-sync change
if new:
    from mmseg_heads.engine.step_log import EpochLosses, StepLog

    losses, log = EpochLosses(), StepLog(1)
else:
    losses = steps.EpochLosses()
times = []
for i in range(24):
    batch = batches[i % 4]
    start = time.perf_counter()
    logits, loss, parts = trainer.stepper.micro_batch(batch, True)
    losses.add(loss, parts)
    if new:
        counts = steps.batch_foreground_counts(logits, batch)
        log.add(1, trainer.step, counts, parts["nonfinite"], trainer.stepper.skipped)
        log.read()
    else:
        steps.batch_foreground_counts(logits, batch, trainer.config.spec)
    times.append(time.perf_counter() - start)
median = statistics.median(times[4:])
print(json.dumps({"tree": sys.argv[1], "file": mmseg_heads.__file__, "median": median}))
trainer.close()
