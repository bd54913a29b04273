"""Median seconds of a training step as the trainer takes it (Stepper.micro_batch + the
trainer's per-step bookkeeping), in the package found first on sys.path."""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import yaml
from pathlib import Path
import mmseg_heads
from mmseg_heads.config import load_config
from mmseg_heads.engine.trainer import Trainer
from mmseg_heads.engine.evaluator import to_device
from mmseg_heads.engine.loaders import train_loader
from mmseg_heads.engine import steps as S
spec = Path(sys.argv[2])
out = Path(sys.argv[3])
cfg = {"data": str(spec), "model": {"encoders": {"optical": "resnet18", "thermal": "resnet18"}},
       "train": {"epochs": 1, "batch_size": 4, "crop": 128, "workers": 0, "precision": sys.argv[4],
                 "threads": 1, "seed": 0, "out": str(out)}}
path = out.parent / (out.name + ".yaml"); path.write_text(yaml.safe_dump(cfg))
t = Trainer(load_config(path), progress=False)
loader = train_loader(t.dataset, t.config.train, 4, 1, t.world)
batches = [to_device(b, t.device) for b in loader][:4]
t._train_mode()
new = hasattr(S, "foreground_tp_fp_fn")
if new:
    from mmseg_heads.engine.step_log import EpochLosses, StepLog
    losses, log = EpochLosses(), StepLog(1)
else:
    losses = S.EpochLosses()
times = []
for i in range(24):
    b = batches[i % 4]
    start = time.perf_counter()
    logits, loss, parts = t.stepper.micro_batch(b, True)
    losses.add(loss, parts)
    if new:
        log.add(1, t.step, S.batch_foreground_counts(logits, b), parts["nonfinite"], t.stepper.skipped)
        log.read()
    else:
        S.batch_foreground_counts(logits, b, t.config.spec)
    times.append(time.perf_counter() - start)
print(json.dumps({"tree": sys.argv[1], "file": mmseg_heads.__file__, "median": statistics.median(times[4:])}))
t.close()
