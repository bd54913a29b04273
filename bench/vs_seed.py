"""Our single-modality VGG16 U-Net vs a re-implementation of the seed's Unet-VGG16: a training step.

The seed (bubbliiiing/unet-pytorch, ``nets/unet.py`` + ``nets/vgg.py``, re-implemented here):
torchvision's VGG16 ``features`` split at the pools into five blocks (strides 1, 2, 4, 8, 16; the
last max-pool unused), four ``unetUp`` blocks (bilinear ×2 upsample with align_corners, concat,
two 3×3 conv + ReLU; in_filters [192, 384, 768, 1024], out_filters [64, 128, 256, 512]) and a
final 1×1 conv; its loss is ``CE_Loss + Dice_loss`` on loader-made one-hot labels (see
``bench/losses.py``), its precision fp32.

Ours: ``encoders: {image: vgg16}``, ``depth: 4`` (levels at strides 1–16, as the seed) and
``decoder_channels: [512, 256, 128, 64]``, so every decoder block has the seed's in/out
channels; one shared-decoder head; ``TaskLoss`` ce + dice. 21 classes (the seed's VOC default).

Targets: ours ≥ 2× faster per step at equal precision (fp32), and ≥ 4× with each side's
defaults (ours: ``precision: auto``, bf16 autocast on a CPU with AVX512-BF16; the seed: fp32).
When ours is not faster, the script prints a profile of both steps.

    python bench/vs_seed.py
    python bench/vs_seed.py --quick
"""

from __future__ import annotations

import common
import numpy as np
import torch
from losses import usual_ce_loss, usual_dice_loss
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

EQUAL_TARGET = 2.0
DEFAULTS_TARGET = 4.0


class SeedVGG16(nn.Module):
    """``nets/vgg.py``: ``vgg16().features`` (built by torchvision's ``make_layers(cfgs["D"])``,
    the same layers without the 100M-parameter classifier), cut at the pools."""

    def __init__(self):
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=False)

    def forward(self, x):
        feat1 = self.features[:4](x)
        feat2 = self.features[4:9](feat1)
        feat3 = self.features[9:16](feat2)
        feat4 = self.features[16:23](feat3)
        feat5 = self.features[23:-1](feat4)
        return [feat1, feat2, feat3, feat4, feat5]


class UnetUp(nn.Module):
    """``nets/unet.py::unetUp``."""

    def __init__(self, in_size, out_size):
        super().__init__()
        self.conv1 = nn.Conv2d(in_size, out_size, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(out_size, out_size, kernel_size=3, padding=1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, inputs1, inputs2):
        outputs = torch.cat([inputs1, self.up(inputs2)], 1)
        outputs = self.conv1(outputs)
        outputs = self.relu(outputs)
        outputs = self.conv2(outputs)
        outputs = self.relu(outputs)
        return outputs


class SeedUnet(nn.Module):
    """``nets/unet.py::Unet`` with ``backbone="vgg"``."""

    def __init__(self, num_classes=21):
        super().__init__()
        self.vgg = SeedVGG16()
        in_filters = [192, 384, 768, 1024]
        out_filters = [64, 128, 256, 512]
        self.up_concat4 = UnetUp(in_filters[3], out_filters[3])
        self.up_concat3 = UnetUp(in_filters[2], out_filters[2])
        self.up_concat2 = UnetUp(in_filters[1], out_filters[1])
        self.up_concat1 = UnetUp(in_filters[0], out_filters[0])
        self.final = nn.Conv2d(out_filters[0], num_classes, 1)

    def forward(self, inputs):
        feat1, feat2, feat3, feat4, feat5 = self.vgg(inputs)
        up4 = self.up_concat4(feat4, feat5)
        up3 = self.up_concat3(feat3, up4)
        up2 = self.up_concat2(feat2, up3)
        up1 = self.up_concat1(feat1, up2)
        return self.final(up1)


def seed_step(model, images, pngs, one_hot, num_classes, precision, device):
    """``utils_fit.fit_one_epoch`` without the f_score: CE_Loss + Dice_loss, backward, step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    weights = torch.ones(num_classes, device=device)
    return common.training_step(
        lambda: model(images),
        lambda out: (
            usual_ce_loss(out.float(), pngs, weights, num_classes)
            + usual_dice_loss(out.float(), one_hot)
        ),
        optimizer,
        precision,
        device,
    )


def build_pair(num_classes: int, device):
    torch.manual_seed(0)
    ours = common.build_ours(
        {"image": "vgg16"},
        modalities={"image": 3},
        tasks={"seg": num_classes},
        depth=4,
        decoder_channels=[512, 256, 128, 64],
    ).to(device)
    seed = SeedUnet(num_classes).to(device)
    return ours, seed


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=None, help="default 256 (quick: 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--profile", action="store_true", help="profile even when ours is faster")
    args = p.parse_args()
    device = common.setup(args, reps=7, warmup=1)
    size = args.size or (32 if args.quick else 256)
    k = args.classes
    default = common.default_precision(device)

    ours, seed = build_pair(k, device)
    batch = common.synthetic_batch(
        {"image": 3}, {"seg": k}, batch=args.batch, size=size, device=device
    )
    labels = batch["labels"]["seg"]
    pngs = torch.where(labels == common.IGNORE_INDEX, k, labels)  # the seed's loader mapping
    one_hot = torch.from_numpy(np.eye(k + 1)[pngs.cpu().numpy()]).float().to(device)
    images = batch["images"]["image"]
    criterion = common.multitask_loss({"seg": k}).to(device)
    ours_opt = common.trainer_optimizer(ours)
    seed_steps = {}
    variants = {}
    for precision in dict.fromkeys(["fp32", default]):
        variants[f"ours/{precision}"] = common.ours_step(
            ours, criterion, batch, precision, device, optimizer=ours_opt
        )
        seed_steps[precision] = seed_step(seed, images, pngs, one_hot, k, precision, device)
        variants[f"seed/{precision}"] = seed_steps[precision]
    timings = common.alternate(
        variants, reps=args.reps, warmup=args.warmup, device=device, label="vs_seed"
    )

    equal = timings.ratio("seed/fp32", "ours/fp32")
    defaults = timings.ratio("seed/fp32", f"ours/{default}")
    ratios = {"equal_precision_fp32": equal, f"defaults_ours_{default}_seed_fp32": defaults}
    targets = {
        "equal_precision_fp32": common.target(equal, ">=", EQUAL_TARGET),
        "defaults": common.target(defaults, ">=", DEFAULTS_TARGET),
    }
    if default != "fp32":
        ratios[f"equal_precision_{default}"] = timings.ratio(f"seed/{default}", f"ours/{default}")
    rows = [
        {"variant": name, "step_s": timings.median(name), "spread": timings.spread(name)}
        for name in variants
    ]
    params = {"ours": common.count_parameters(ours), "seed": common.count_parameters(seed)}
    body = [
        ["equal precision (fp32)", timings.median("seed/fp32"), timings.median("ours/fp32"), equal,
         f"≥ {EQUAL_TARGET:g}×", equal >= EQUAL_TARGET],
        [f"defaults (seed fp32, ours {default})", timings.median("seed/fp32"),
         timings.median(f"ours/{default}"), defaults, f"≥ {DEFAULTS_TARGET:g}×",
         defaults >= DEFAULTS_TARGET],
    ]  # fmt: skip
    if default != "fp32":
        body.append(
            [f"equal precision ({default})", timings.median(f"seed/{default}"),
             timings.median(f"ours/{default}"), ratios[f"equal_precision_{default}"], "", ""]
        )  # fmt: skip
    tables = [
        common.table(["comparison", "seed s/step", "ours s/step", "speedup", "target", "met"], body)
    ]
    notes = [
        f"{args.batch}×3×{size}×{size}, {k} classes; parameters: ours {params['ours'] / 1e6:.1f}M, "
        f"seed {params['seed'] / 1e6:.1f}M",
        "same encoder (VGG16 features) and decoder widths; ours adds a 1×1 conv + BN + ReLU "
        "fusion projection per level (single-source concat fusion), BatchNorm in the decoder, "
        "nearest instead of bilinear upsampling and a 3×3 instead of a 1×1 classifier",
    ]
    profile = None
    if equal < EQUAL_TARGET or defaults < DEFAULTS_TARGET or args.profile:
        profile, text = common.profile_steps(
            {
                "ours/fp32": variants["ours/fp32"],
                "seed/fp32": variants["seed/fp32"],
                f"ours/{default}": variants[f"ours/{default}"],
            }
            if default != "fp32"
            else {"ours/fp32": variants["ours/fp32"], "seed/fp32": variants["seed/fp32"]},
            device,
        )
        tables.append(text)
        notes.append("profile: one step of each after the timed rounds, top operators by self time")
    common.report(
        "vs_seed",
        args,
        settings={
            "size": size,
            "batch": args.batch,
            "classes": k,
            "ours": common.model_config(
                {"image": "vgg16"}, depth=4, decoder_channels=[512, 256, 128, 64]
            ),
            "default_precision": default,
            "params": params,
            "profile": profile,
        },
        rows=rows,
        ratios=ratios,
        targets=targets,
        noise=timings.spreads(),
        tables=tables,
        notes=notes,
    )


if __name__ == "__main__":
    main()
