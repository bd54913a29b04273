"""Achieved FLOP/s of a training step as a fraction of this machine's GEMM peak.

Peak: ``torch.matmul`` of large square matrices (fp32 and bf16), timed in the same rounds as the
steps, so a busy machine lowers both. On some CPUs (AMD with MKL) fp32 ``matmul`` does not reach
what oneDNN's convolutions reach, and steps then run above "100 %" of it; so a second probe, a
3×3 convolution (256 → 256 channels, 4×64×64, oneDNN / cuDNN), is timed too, and fractions are
given against the higher of the two (the machine's peak) and against ``matmul`` alone. FLOPs of a step: ``torch.utils.flop_counter.FlopCounterMode``
over forward + loss + backward (convolutions and matrix products; the optimizer's and the
normalisations' elementwise work is not counted, so it only costs time). Fraction = (step FLOPs
/ step time) / (GEMM FLOPs / GEMM time), median over rounds.

Models: ours (trunk benchmark: C0, LGE, T2 with one resnet50 each, 3 tasks), the seed's VGG16
U-Net (``bench/vs_seed.py``) and one ``smp.Unet("resnet50")`` for reference. CPU: batch 2,
256×256, fp32 and bf16 autocast. ``--device cuda``: the MFU mode, 512×512, batch 16, bf16, also
reported against the card's nominal dense bf16 peak when the card is known (H100 target ≥ 35 %).

Target (CPU): ours ≥ 70 % of peak.

    python bench/roofline.py
    python bench/roofline.py --quick
    python bench/roofline.py --device cuda       # MFU on a GPU
"""

from __future__ import annotations

import copy

import common
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from vs_seed import SeedUnet

from mmseg_heads.engine.compile_mode import CompileChoice

MODALITIES = {"C0": 1, "LGE": 1, "T2": 1}
TASKS = {"anatomy": 4, "scar": 2, "edema": 2}
CPU_TARGET = 0.70
MFU_TARGET = 0.35
# Nominal dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by substring of the device name.
NOMINAL_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
}


def nominal_peak(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in NOMINAL_BF16.items() if k in name), None)


def gemm(n: int, dtype, device, repeat: int = 3):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(repeat):
            torch.matmul(a, b)

    return run, 2 * n**3 * repeat


def conv3x3(dtype, device, repeat: int = 3):
    x = torch.randn(4, 256, 64, 64, device=device, dtype=dtype)
    w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(repeat):
            F.conv2d(x, w, padding=1)

    return run, 2 * x.numel() * 256 * 9 * repeat


def count_flops(forward, loss, precision, device) -> int:
    """FLOPs do not depend on the dtype; counting under the run's autocast saves memory."""
    with FlopCounterMode(display=False) as counter, common.autocast(precision, device):
        out = forward()
    with FlopCounterMode(display=False) as backward_counter:
        loss(out).backward()
    return counter.get_total_flops() + backward_counter.get_total_flops()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=None, help="CPU 256, CUDA 512 (quick: 32)")
    p.add_argument("--batch", type=int, default=None, help="CPU 2, CUDA 16")
    p.add_argument("--encoder", default=None, help="default resnet50 (quick: resnet18)")
    p.add_argument("--gemm", type=int, default=None, help="GEMM side (CPU 4096, CUDA 8192)")
    p.add_argument("--precisions", nargs="+", default=None, help="CPU fp32 bf16, CUDA bf16")
    p.add_argument(
        "--compile",
        nargs="*",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune"],
        metavar="MODE",
        help="also time ours under torch.compile in each MODE (default: the default mode); "
        "train.compile: auto picks among eager, default and reduce-overhead on CUDA",
    )
    p.add_argument(
        "--profile", action="store_true", help="also print ours' top operators in one step"
    )
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=1)
    cuda = device.type == "cuda"
    size = args.size or (32 if args.quick else 512 if cuda else 256)
    batch_size = args.batch or (16 if cuda and not args.quick else 2)
    encoder = args.encoder or ("resnet18" if args.quick else "resnet50")
    n = args.gemm or (512 if args.quick else 8192 if cuda else 4096)
    precisions = args.precisions or (["bf16"] if cuda else list(common.PRECISIONS))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    batch = common.synthetic_batch(MODALITIES, TASKS, batch=batch_size, size=size, device=device)
    stacked = torch.cat([batch["images"][m] for m in MODALITIES], 1)
    labels = batch["labels"]["anatomy"]

    torch.manual_seed(0)
    ours, ours_batch = common.as_trained(
        common.build_ours({m: encoder for m in MODALITIES}, modalities=MODALITIES, tasks=TASKS).to(
            device
        ),
        batch,
    )
    criterion = common.multitask_loss(TASKS).to(device)
    seed = SeedUnet(num_classes=4).to(device)
    unet = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=4).to(device)
    single = common.task_loss().to(device)
    models = {
        "ours": (
            ours,
            lambda: ours(ours_batch["images"]),
            lambda out: criterion(
                {k: v.float() for k, v in out.items()},
                batch["labels"],
                batch["has_label"],
                batch["labelled"],
            )[0],
        ),
        "seed VGG16 U-Net": (seed, lambda: seed(stacked), lambda o: single(o.float(), labels)[0]),
        f"smp U-Net {encoder}": (
            unet,
            lambda: unet(stacked),
            lambda o: single(o.float(), labels)[0],
        ),
    }
    flops = {
        name: count_flops(fwd, loss, precisions[-1], device)
        for name, (_, fwd, loss) in models.items()
    }
    for mode in (args.compile or ["default"]) if args.compile is not None else []:
        # same FLOPs as eager; compiled in its first warm-up call
        twin = copy.deepcopy(ours)  # its own weights and optimizer, the same start
        compiled = CompileChoice(mode, "bench").wrap(twin)
        name = f"ours, torch.compile {mode}"
        models[name] = (
            twin,
            lambda compiled=compiled: compiled(ours_batch["images"]),
            models["ours"][2],
        )
        flops[name] = flops["ours"]

    variants, probe_flops = {}, {}
    for precision in precisions:
        run, probe_flops["gemm"] = gemm(n, dtypes[precision], device)
        variants[f"gemm/{precision}"] = run
        run, probe_flops["conv"] = conv3x3(dtypes[precision], device)
        variants[f"conv/{precision}"] = run
        for name, (model, fwd, loss) in models.items():
            model.train()
            optimizer = (
                common.trainer_optimizer(model)  # ours as `mmseg-heads train` runs it
                if name.startswith("ours")
                else torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
            )
            variants[f"{name}/{precision}"] = common.training_step(
                fwd, loss, optimizer, precision, device
            )
    timings = common.alternate(
        variants, reps=args.reps, warmup=args.warmup, device=device, label="roofline"
    )

    nominal = nominal_peak(device)
    profile_tables = []
    if args.profile:
        profile, text = common.profile_steps(
            {f"ours/{p}": variants[f"ours/{p}"] for p in precisions}, device, top=20
        )
        profile_tables.append(text)
    rows, ratios, targets, body = [], {}, {}, []
    for precision in precisions:
        peaks = {
            probe: probe_flops[probe] / timings.median(f"{probe}/{precision}")
            for probe in ("gemm", "conv")
        }
        for probe, label in (("gemm", f"matmul {n}²"), ("conv", "conv 3×3, 256 ch")):
            share = peaks[probe] / max(peaks.values())
            body.append(
                [f"peak probe: {label}", precision, probe_flops[probe] / 1e9,
                 peaks[probe] / 1e9, f"{share:.0%}", ""]
            )  # fmt: skip
            rows.append(
                {"model": f"peak/{probe}", "precision": precision, "flop_per_s": peaks[probe]}
            )
        for name in models:
            key = f"{name}/{precision}"
            of_gemm = timings.ratio(f"gemm/{precision}", key) * flops[name] / probe_flops["gemm"]
            of_conv = timings.ratio(f"conv/{precision}", key) * flops[name] / probe_flops["conv"]
            fraction = min(of_gemm, of_conv)  # against the higher peak
            achieved = flops[name] / timings.median(key)
            ratios[f"{name}/{precision}"] = fraction
            ratios[f"{name}/{precision}/of_matmul"] = of_gemm
            row = {
                "model": name,
                "precision": precision,
                "step_flops": flops[name],
                "step_s": timings.median(key),
                "flop_per_s": achieved,
                "fraction_of_peak": fraction,
                "fraction_of_matmul_peak": of_gemm,
            }
            goal = ""
            mfu = achieved / nominal if cuda and nominal and precision == "bf16" else None
            if mfu is not None and name.startswith("ours"):
                row["mfu_nominal"] = ratios[f"{name}/{precision}/mfu_nominal"] = mfu
                goal = f"MFU {mfu:.0%} (the trainer runs eager)"
            if name == "ours":
                if mfu is not None:
                    targets[f"ours/{precision}/mfu"] = common.target(mfu, ">=", MFU_TARGET)
                    goal = f"MFU {mfu:.0%} (≥ {MFU_TARGET:.0%} of nominal)"
                elif cuda:
                    targets[f"ours/{precision}/mfu"] = common.target(fraction, ">=", MFU_TARGET)
                    goal = f"≥ {MFU_TARGET:.0%} (of measured peak)"
                else:
                    targets[f"ours/{precision}"] = common.target(fraction, ">=", CPU_TARGET)
                    goal = f"≥ {CPU_TARGET:.0%}: {'met' if fraction >= CPU_TARGET else 'not met'}"
            rows.append(row)
            body.append(
                [name, precision, flops[name] / 1e9, achieved / 1e9,
                 f"{fraction:.0%} ({of_gemm:.0%})", goal]
            )  # fmt: skip
    common.report(
        "roofline",
        args,
        settings={
            "size": size,
            "batch": batch_size,
            "encoder": encoder,
            "gemm_n": n,
            "precisions": precisions,
            "nominal_bf16_peak": nominal,
            "flops": flops,
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=timings.spreads(),
        tables=[
            common.table(
                [
                    "model",
                    "precision",
                    "GFLOP/call",
                    "GFLOP/s",
                    "of peak (of matmul alone)",
                    "target",
                ],
                body,
            ),
            *profile_tables,
        ],
        notes=[
            f"{batch_size}×{size}×{size}; FLOPs counted by FlopCounterMode over forward + loss + "
            "backward (the AdamW step is not counted); peak = the faster of the two probes",
        ],
    )


if __name__ == "__main__":
    main()
