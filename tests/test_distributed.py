"""Training under torchrun (gloo on the CPU), batch_size: auto, fp16 loss scaling, TensorBoard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine import write_config

from mmseg_heads.config import load_config
from mmseg_heads.engine import batch_size as auto
from mmseg_heads.engine import trainer as trainer_module
from mmseg_heads.engine.distributed import ShardSampler, World
from mmseg_heads.engine.evaluate import evaluate
from mmseg_heads.engine.loaders import train_dataset, train_loader
from mmseg_heads.engine.run import model_from_config
from mmseg_heads.engine.trainer import Trainer, seed_everything, train
from mmseg_heads.errors import UserError


def _val_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "val"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_two_processes_match_a_single_process_evaluation(tmp_path, demo_spec):
    config = write_config(
        tmp_path, demo_spec, epochs=2, batch_size=2, accumulate=2, freeze_encoders_epochs=1,
        checkpoint_every=1,
    )  # fmt: skip
    # gloo on the CPU, also on a machine with GPUs (tests/test_cuda.py has the NCCL run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--standalone", "-m", "mmseg_heads", "train", str(config), "--skip-scan",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "config"
    assert done.stdout.count("run directory:") == 1  # rank 0 alone speaks

    # Each epoch's validation (each process evaluates half the split, matrices summed) equals a
    # single-process evaluation of that epoch's checkpoint.
    records = _val_records(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        report = evaluate(run_dir / "checkpoints" / f"epoch_{record['epoch']}.pt")
        for task, scores in record["tasks"].items():
            assert scores["confusion"] == report["tasks"][task]["confusion_matrix"], task
        assert sum(map(sum, record["tasks"]["shapes"]["confusion"])) == 8 * 64 * 64

    # Epoch 1 trained with frozen encoders: their weights and BatchNorm statistics are rank 0's
    # initial ones (DDP starts every process from rank 0's weights).
    seed_everything(3)  # write_config's seed; rank 0 seeds with seed + 0
    initial = model_from_config(load_config(config)).state_dict()
    epoch_1 = torch.load(run_dir / "checkpoints" / "epoch_1.pt", weights_only=True)
    epoch_2 = torch.load(run_dir / "checkpoints" / "epoch_2.pt", weights_only=True)
    encoder_keys = [k for k in initial if k.startswith("trunk.encoders.")]
    assert any("running_mean" in k for k in encoder_keys)
    for key in encoder_keys:
        assert torch.equal(epoch_1["model"][key], initial[key]), key
    assert not all(torch.equal(epoch_2["model"][k], initial[k]) for k in encoder_keys)
    # 16 samples / 2 processes / batch 2 = 4 batches per process, accumulated in pairs: 2 steps
    assert epoch_2["step"] == 4
    assert epoch_2["world_size"] == 2 and len(epoch_2["rng_per_rank"]) == 2
    assert not torch.equal(epoch_2["rng_per_rank"][0]["torch"], epoch_2["rng_per_rank"][1]["torch"])

    # A crash after epoch 1, resumed under torchrun, ends in the uninterrupted run's weights.
    crashed = tmp_path / "crashed"
    shutil.copytree(run_dir, crashed)
    shutil.copyfile(crashed / "checkpoints" / "epoch_1.pt", crashed / "checkpoints" / "last.pt")
    resumed = subprocess.run(
        [*command, "--resume", str(crashed)], capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(crashed / "checkpoints" / "last.pt", weights_only=True)
    assert final["epoch"] == 2
    for key, value in epoch_2["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_shards_split_indices_without_overlap():
    indices = list(range(11))
    train_shards = [ShardSampler(indices, World(r, r, 3), even=True) for r in range(3)]
    assert [len(s) for s in train_shards] == [3, 3, 3]  # equal: every process takes equal steps
    assert sorted(i for s in train_shards for i in s) == list(range(9))
    eval_shards = [list(ShardSampler(indices, World(r, r, 3), even=False)) for r in range(3)]
    assert sorted(i for s in eval_shards for i in s) == indices  # every sample exactly once


def test_each_process_draws_its_shard_of_one_shuffle_with_its_own_augmentation(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec))
    dataset = train_dataset(config.spec, config.train)
    train_cfg = config.train

    def epoch(rank: int) -> tuple[list[str], torch.Tensor]:
        torch.manual_seed(rank)  # the trainer seeds seed + rank
        loader = train_loader(dataset, train_cfg, 2, epoch=1, world=World(rank, rank, 2))
        ids, crops = [], []
        for batch in loader:
            ids += batch["id"]
            crops.append(batch["images"]["thermal"])
        return ids, torch.cat(crops)

    (ids_0, crops_0), (ids_1, crops_1) = epoch(0), epoch(1)
    assert len(ids_0) == len(ids_1) == 8
    assert not set(ids_0) & set(ids_1)
    assert sorted(ids_0 + ids_1) == sorted(dataset.ids)
    assert not torch.equal(crops_0, crops_1)


class Segmenter(torch.nn.Module):
    """The smallest model of the segmenter's interface: images by modality in, logits by task out."""

    def __init__(self, body: torch.nn.Module):
        super().__init__()
        self.body = body

    def forward(self, images):
        return {"t": self.body(images["x"])}


def test_auto_batch_size_on_cpu_takes_the_smallest_within_5_percent_of_the_fastest(monkeypatch):
    model = torch.nn.Conv2d(1, 2, 1)
    monkeypatch.setattr(auto, "training_step", lambda *args: None)
    shapes = auto.Shapes({"x": 1}, {"t": 2}, 32)
    cpu = torch.device("cpu")
    # per-sample time falls until 8, then no longer clearly: 16 is tried, 32 is not
    times = {2: 40.0, 4: 30.0, 8: 25.0, 16: 24.5, 32: 10.0}
    tried: list[int] = []

    def timed(model, shapes, size, device, precision) -> float:
        tried.append(size)
        return times[size] * size / 1e3  # seconds of one step of `size` samples

    monkeypatch.setattr(auto, "_timed", timed)
    size, reason = auto._fastest_per_sample(model, shapes, cpu, "fp32", [2, 4, 8, 16, 32])
    assert size == 8
    assert sorted(set(tried)) == [2, 4, 8, 16]
    assert "8 → 25 ms" in reason and "16 → 24 ms" in reason


def test_auto_batch_size_leaves_the_model_and_the_random_streams_alone(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4))

    segmenter = Segmenter(model)
    before = {k: v.clone() for k, v in segmenter.state_dict().items()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    size, reason = auto.choose_batch_size(
        segmenter, auto.Shapes({"x": 2}, {"t": 4}, 16), torch.device("cpu"), "fp32", limit=8
    )
    assert size in (2, 4, 8) and "per sample" in reason
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in segmenter.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_auto_batch_size_probes_crops_padded_as_collate_pads_them(tmp_path, demo_spec):
    # crop 48 trains on 64×64 batches; probing 48×48 inputs failed (not divisible by 32)
    config = load_config(write_config(tmp_path, demo_spec, crop=48))
    shapes = auto.Shapes.from_spec(config.spec, config.train["crop"])
    assert shapes.crop == 64
    model = model_from_config(config)
    size, reason = auto.choose_batch_size(model, shapes, torch.device("cpu"), "fp32", limit=4)
    assert size in (2, 4) and "per sample" in reason
    guidance = "\n".join(auto.memory_guidance(model, shapes, 4))
    assert "64² per sample: the crop, padded to a multiple of 32" in guidance


def test_activation_memory_grows_with_the_pixels_of_a_sample():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU())

    def per_sample(crop: int) -> int:
        shapes = auto.Shapes({"x": 1}, {"t": 8}, crop)
        return auto.activation_bytes_per_sample(
            Segmenter(model), shapes, torch.device("cpu"), "fp32"
        )

    # conv saves its input (1×crop²) and ReLU its output (8×crop²), fp32
    assert per_sample(32) == 4 * 32 * 32 * (1 + 8)
    assert per_sample(64) == 4 * per_sample(32)
    # above auto.PROBE_SIDE (128) measured at 128² and scaled: the same number
    assert per_sample(256) == 4 * 256 * 256 * (1 + 8)


def test_scaled_activation_memory_matches_a_direct_measurement(monkeypatch, demo_spec, tmp_path):
    """A real model (encoders, decoder, heads): measured at 128² and scaled to 256², within 2 % of
    measuring at 256² itself."""
    config = load_config(write_config(tmp_path, demo_spec, "scaled", epochs=1))
    model = model_from_config(config)
    shapes = auto.Shapes.from_spec(config.spec, 256)
    scaled = auto.activation_bytes_per_sample(model, shapes, torch.device("cpu"), "fp32")
    monkeypatch.setattr(auto, "PROBE_SIDE", 256)
    direct = auto.activation_bytes_per_sample(model, shapes, torch.device("cpu"), "fp32")
    assert abs(scaled - direct) <= 0.02 * direct


def test_auto_batch_size_is_measured_once_and_kept_by_resume(tmp_path, demo_spec, monkeypatch):
    calls: list[int] = []

    def choose(model, shapes, device, precision, *, limit):
        calls.append(limit)
        return 4, "measured"

    monkeypatch.setattr(auto, "choose_batch_size", choose)
    config = load_config(write_config(tmp_path, demo_spec, epochs=1, batch_size="auto"))
    run_dir = train(config, progress=False)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert calls == [16] and state["batch_size"] == 4 and state["step"] == 4  # 16 samples / 4

    monkeypatch.setattr(auto, "choose_batch_size", lambda *a, **k: (8, "changed"))
    longer = load_config(
        write_config(tmp_path, demo_spec, epochs=2, batch_size="auto"), ["train.epochs=2"]
    )
    resumed = Trainer(longer, progress=False, resume=run_dir)
    assert resumed.batch == 4  # the run's own, not a new measurement
    report = evaluate(run_dir / "checkpoints" / "last.pt")
    assert report["samples"] == 8


def test_fp16_keeps_its_loss_scale_in_checkpoints(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=1, precision="fp16"))
    trainer = Trainer(config, progress=False)
    assert trainer.scaler.is_enabled()
    run_dir = trainer.fit()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["split"] == "train")
    resumed = Trainer(load_config(config.path, ["train.epochs=2"]), progress=False, resume=run_dir)
    assert resumed.scaler.get_scale() == state["scaler"]["scale"]


def test_bf16_and_fp32_runs_keep_loss_scaling_off(tmp_path, demo_spec):
    config = load_config(write_config(tmp_path, demo_spec, epochs=1))
    assert not Trainer(config, progress=False).scaler.is_enabled()


def test_tensorboard_gets_the_numbers_of_metrics_jsonl(tmp_path, demo_spec):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_config(write_config(tmp_path, demo_spec, epochs=2, tensorboard=True))
    run_dir = train(config, progress=False)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [r["loss"] for r in records if r["split"] == "train"]
    assert losses == pytest.approx(expected, rel=1e-6)
    f = [e.value for e in events.Scalars("val/hotspots/foreground_f")]
    assert f == pytest.approx(
        [r["tasks"]["hotspots"]["macro_foreground_f"] for r in _val_records(run_dir)], rel=1e-6
    )


def test_tensorboard_missing_stops_before_the_run_directory_exists(
    tmp_path, demo_spec, monkeypatch
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    config = load_config(write_config(tmp_path, demo_spec, epochs=1, tensorboard=True))
    with pytest.raises(UserError, match="tensorboard") as error:
        Trainer(config, progress=False)
    assert error.value.field == "train.tensorboard"
    assert not (tmp_path / "config").exists()


def test_sync_batchnorm_on_cpu_processes_is_a_user_error(tmp_path, demo_spec, monkeypatch):
    monkeypatch.setattr(trainer_module, "init_world", lambda: World(0, 0, 2))
    config = load_config(write_config(tmp_path, demo_spec, sync_batchnorm=True))
    with pytest.raises(UserError, match="CUDA") as error:
        Trainer(config, progress=False)
    assert error.value.field == "train.sync_batchnorm"
    assert not (tmp_path / "config").exists()


def test_memory_guidance_adds_weights_and_activations():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU())

    lines = auto.memory_guidance(Segmenter(model), auto.Shapes({"x": 1}, {"t": 8}, 256), 12)
    text = "\n".join(lines)
    # 4 bytes × 256² × (1 input + 8 ReLU outputs) = 2.25 MiB per sample in fp32
    assert "activations per sample      2 MiB fp32" in text
    assert [line.split()[1] for line in lines if "needs about" in line] == [
        "8", "12", "16", "32",
    ]  # fmt: skip
    assert "batch 32   needs about   72 MiB fp32" in text  # 32 × 2.25 MiB + 80 params × 16 B


def test_compiled_training_saves_the_eager_models_checkpoint_and_weights(
    tmp_path, demo_spec, monkeypatch
):
    # aot_eager: dynamo's graph capture and AOTAutograd without code generation, so the test
    # checks the trainer's wiring in seconds (inductor on a CPU takes minutes, and its random
    # numbers differ from eager ones by design).
    compile_calls = []
    original = torch.compile

    def compile(module, **kwargs):
        compile_calls.append(module)
        return original(module, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile)

    def run(name: str, compile: bool) -> tuple[Trainer, dict]:
        config = load_config(write_config(tmp_path, demo_spec, name, epochs=1, compile=compile))
        trainer = Trainer(config, progress=False)
        run_dir = trainer.fit()
        trainer.close()
        return trainer, torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)

    compiled, state = run("compiled", True)
    assert compile_calls == [compiled.model]  # the training module, once; validation stays eager
    eager, reference = run("eager", False)
    assert len(compile_calls) == 1 and eager.trained is eager.model
    # the eager module's keys (no `_orig_mod.` prefix) and, after 4 steps, its weights
    assert state["model"].keys() == reference["model"].keys()
    for key, value in reference["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(state["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_more_processes_than_gpus_is_one_line_naming_the_fix(monkeypatch):
    from mmseg_heads.engine import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for local_rank in (0, 1):  # every process stops, before NCCL starts
        with pytest.raises(UserError) as error:
            distributed._check_one_gpu_per_process(local_rank)
    assert str(error.value) == (
        "torchrun --nproc_per_node: torchrun started 2 processes on this machine but torch sees "
        "1 GPU (each process trains on a GPU of its own); use --nproc_per_node 1, or "
        "CUDA_VISIBLE_DEVICES= to train on the CPU"
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    distributed._check_one_gpu_per_process(1)
