"""The CUDA paths: training in bf16 and fp16, ``batch_size: auto``, evaluation, prediction, torchrun.

Every test here skips without a GPU (CI has none). On a GPU machine: ``pytest tests/test_cuda.py``
(``bench/gpu_checks.sh`` runs it with the GPU benchmarks).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_engine import TINY_ENCODER
from test_engine import write_config as cpu_config

from mmseg_heads.config import load_config
from mmseg_heads.engine import batch_size as auto
from mmseg_heads.engine.evaluate import evaluate
from mmseg_heads.engine.evaluator import to_device
from mmseg_heads.engine.loaders import augment_batch, train_loader
from mmseg_heads.engine.run import model_from_config
from mmseg_heads.engine.step_log import EpochLosses, StepLog
from mmseg_heads.engine.steps import batch_foreground_counts
from mmseg_heads.engine.trainer import Trainer, train
from mmseg_heads.losses import functional as LF
from mmseg_heads.metrics import functional as MF

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def write_config(*args, **train):
    """test_engine's config, eager unless a test asks (``compile: auto`` would probe each run)."""
    return cpu_config(*args, **{"compile": False, **train})


CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def _confusions(report: dict) -> dict[str, np.ndarray]:
    return {t: np.array(v["confusion_matrix"]) for t, v in report["tasks"].items()}


def _evaluate_on_the_cpu(checkpoint, tmp_path) -> dict:
    """The same checkpoint evaluated by a process that sees no GPU."""
    out = tmp_path / "cpu_report.json"
    code = (
        "import json, sys; from mmseg_heads.engine.evaluate import evaluate; "
        "r = evaluate(sys.argv[1]); "
        "json.dump({'tasks': r['tasks']}, open(sys.argv[2], 'w'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint), str(out)],
        env=CPU_ONLY, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_training_on_the_gpu_learns_and_evaluates_as_the_cpu_does(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=3, precision="auto"))
    trainer = Trainer(config, progress=False)
    assert trainer.device.type == "cuda" and trainer.precision == "bf16"
    assert next(trainer.model.parameters()).is_cuda
    run_dir = trainer.fit()
    trainer.close()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_loss = [r["loss"] for r in records if r["split"] == "train"]
    assert len(train_loss) == 3 and all(np.isfinite(train_loss)), train_loss
    assert train_loss[-1] < train_loss[0], train_loss

    checkpoint = run_dir / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    assert all(not v.is_cuda for v in state["model"].values())
    on_gpu = _confusions(evaluate(checkpoint))  # bf16 autocast on the GPU
    on_cpu = _confusions(_evaluate_on_the_cpu(checkpoint, tmp_path))  # bf16 autocast on the CPU
    for task, matrix in on_gpu.items():
        assert matrix.sum() == on_cpu[task].sum() == 8 * 64 * 64, task
        # bf16 kernels differ between devices: a few pixels on class borders may flip
        agree = np.trace(matrix) / matrix.sum()
        assert abs(agree - np.trace(on_cpu[task]) / matrix.sum()) < 0.01, task


def test_fp16_training_scales_the_loss_and_resumes_with_its_scale(tmp_path, demo_spec):
    config = load_config(
        write_config(tmp_path, demo_spec, epochs=2, precision="fp16", checkpoint_every=1)
    )
    trainer = Trainer(config, progress=False)
    assert trainer.precision == "fp16" and trainer.scaler.is_enabled()
    run_dir = trainer.fit()
    trainer.close()
    first = torch.load(run_dir / "checkpoints" / "epoch_1.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < last["scaler"]["scale"] < float("inf")
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())

    shutil.copyfile(run_dir / "checkpoints" / "epoch_1.pt", run_dir / "checkpoints" / "last.pt")
    resumed = Trainer(config, progress=False, resume=run_dir)
    assert resumed.epoch == 1 and resumed.scaler.get_scale() == first["scaler"]["scale"]
    resumed.close()


def test_auto_batch_size_on_the_gpu_is_the_largest_that_fits(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=1, crop=64))
    model = model_from_config(config).cuda().to(memory_format=torch.channels_last)
    shapes = auto.Shapes.from_spec(config.spec, 64)
    size, reason = auto.choose_batch_size(model, shapes, torch.device("cuda"), "bf16", limit=64)
    # a 0.3 M-parameter model on 64×64 crops fits any GPU up to the split's share
    assert size == 64, reason
    assert "fits 90% of the GPU's memory" in reason and "64 → " in reason

    config = load_config(write_config(tmp_path, demo_spec, "auto", epochs=1, batch_size="auto"))
    run_dir = train(config, progress=False)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["batch_size"] == 16 and state["step"] == 1  # the split's 16 samples in one step


def test_compiled_training_on_the_gpu_learns_and_saves_eager_keys(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=2, compile=True))
    run_dir = train(config, progress=False)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state["model"])
    assert _confusions(evaluate(run_dir / "checkpoints" / "last.pt"))


def test_predict_on_the_gpu_writes_the_masks_the_cpu_writes(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=2, precision="fp32"))
    run_dir = train(config, progress=False)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    inputs = [str(p) for p in sorted((demo_spec.parent / "optical").glob("*.png"))]
    masks = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        done = subprocess.run(
            [sys.executable, "-m", "mmseg_heads", "predict", str(checkpoint), *inputs,
             "--out", str(out), "--device", device],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        masks[device] = {p.relative_to(out): np.array(Image.open(p)) for p in out.rglob("*.png")}
    assert masks["cuda"].keys() == masks["cpu"].keys()
    # fp32 on both; cuDNN's TF32 convolutions may flip a pixel where two classes tie
    differing = sum(int((masks["cuda"][k] != masks["cpu"][k]).sum()) for k in masks["cuda"])
    total = sum(m.size for m in masks["cuda"].values())
    assert len(masks["cuda"]) == 2 * len(inputs)  # one mask per task and input
    assert differing / total < 0.002, differing


@pytest.mark.skipif(GPUS > 1, reason="checks the error for more processes than GPUs")
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_with_more_processes_than_gpus_is_a_user_error(tmp_path, demo_spec):
    config = write_config(tmp_path, demo_spec, epochs=1)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(GPUS + 1),
         "--standalone", "-m", "mmseg_heads", "train", str(config), "--skip-scan"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"torchrun started {GPUS + 1} processes on this machine but torch sees {GPUS} GPU" in (
        done.stderr
    )
    assert not (tmp_path / "config").exists()  # stopped before the run directory


@pytest.mark.skipif(GPUS < 2, reason="needs two GPUs (NCCL takes one per process)")
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_on_two_gpus_with_sync_batchnorm(tmp_path, demo_spec):
    config = write_config(
        tmp_path, demo_spec, epochs=2, batch_size=2, sync_batchnorm=True, checkpoint_every=1
    )
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "mmseg_heads", "train", str(config), "--skip-scan"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "config"
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in (r for r in records if r["split"] == "val"):
        report = evaluate(run_dir / "checkpoints" / f"epoch_{record['epoch']}.pt")
        for task, scores in record["tasks"].items():
            got, want = (
                np.array(scores["confusion"]),
                np.array(report["tasks"][task]["confusion_matrix"]),
            )
            assert got.sum() == want.sum() == 8 * 64 * 64, task
            assert np.abs(got - want).sum() / got.sum() < 0.01, task
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] == 2
    assert TINY_ENCODER in json.dumps(state["config"])


def test_training_steps_never_wait_for_the_gpu(tmp_path, demo_spec):
    """Steps as the trainer takes them (bf16, forward, losses, backward, fused AdamW with its
    found_inf check, the step log) under ``set_sync_debug_mode("error")``: any read-back raises."""
    config = load_config(
        write_config(tmp_path, demo_spec, epochs=1, precision="bf16", log_every=1000)
    )
    trainer = Trainer(config, progress=False)
    loader = train_loader(trainer.dataset, config.train, trainer.batch, 1, trainer.world)
    batches = [to_device(b, trainer.device) for b, _ in zip(loader, range(3), strict=False)]
    trainer._train_mode()
    losses, steps = EpochLosses(), StepLog(1000)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches:
            logits, loss, parts = trainer.stepper.micro_batch(batch, True)
            losses.add(loss, parts)
            counts = batch_foreground_counts(logits, batch)
            steps.add(1, trainer.step, counts, parts["nonfinite"], trainer.stepper.skipped)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rows = steps.read()
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(sum(t.values()) > 0 for r in rows for t in r["tasks"].values())
    assert all(np.isfinite(v) for v in losses.means().values())
    trainer.close()


@pytest.mark.parametrize("preset", ["medical", "natural"])
def test_augment_on_gpu_never_waits_and_keeps_labels_in_their_classes(tmp_path, demo_spec, preset):
    config = load_config(
        write_config(tmp_path, demo_spec, epochs=1, augment=preset, augment_on="gpu")
    )
    trainer = Trainer(config, progress=False)
    loader = train_loader(trainer.dataset, config.train, trainer.batch, 1, trainer.world)
    batches = [to_device(b, trainer.device) for b, _ in zip(loader, range(2), strict=False)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        augmented = [
            augment_batch(b, trainer.batch_augment, seed) for seed, b in enumerate(batches)
        ]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for batch in augmented:
        for task, label in batch["labels"].items():
            assert label.is_cuda
            classes = set(range(config.spec.tasks[task].num_classes)) | {255}
            assert set(label.unique().tolist()) <= classes
        for image in batch["images"].values():
            assert image.is_cuda and torch.isfinite(image).all()
    trainer.close()


@pytest.mark.parametrize("per_sample", [False, True])
def test_the_gpus_dice_and_confusion_paths_equal_the_cpus(per_sample):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 24, 24, generator=g)
    target = torch.randint(0, 5, (3, 24, 24), generator=g)
    target[0, :5] = 255
    target[2][target[2] == 4] = 3  # a class absent from one sample
    cpu_logits = logits.clone().requires_grad_(True)
    gpu_logits = logits.cuda().requires_grad_(True)
    cpu = LF.soft_dice(cpu_logits, target, ignore_index=255, per_sample=per_sample)
    gpu = LF.soft_dice(gpu_logits, target.cuda(), ignore_index=255, per_sample=per_sample)
    torch.testing.assert_close(gpu.cpu(), cpu)
    cpu.backward()
    gpu.backward()
    torch.testing.assert_close(gpu_logits.grad.cpu(), cpu_logits.grad)
    pred = logits.argmax(1)
    torch.testing.assert_close(
        MF.confusion_matrix(pred.cuda(), target.cuda(), 5, 255, validate=False).cpu(),
        MF.confusion_matrix(pred, target, 5, 255),
    )


def test_compile_auto_probes_on_the_gpu_and_says_its_choice(tmp_path, demo_spec, caplog):
    config = load_config(write_config(tmp_path, demo_spec, epochs=1, compile="auto"))
    with caplog.at_level("INFO", logger="mmseg_heads"):
        trainer = Trainer(config, progress=False)
    assert trainer.compiled.mode in (None, "default", "reduce-overhead")
    assert trainer.compiled.reason.startswith("auto: a step took eager ")
    assert f"torch.compile: {trainer.compiled.text()}" in caplog.text
    run_dir = trainer.fit()
    trainer.close()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
