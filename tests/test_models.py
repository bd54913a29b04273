"""Encoders, stride alignment, fusion, decoder and heads: contracts checked on tiny inputs."""

from __future__ import annotations

import pytest
import torch

from mmseg_heads.errors import UserError
from mmseg_heads.models.build import build_model
from mmseg_heads.models.encoders import build_encoder
from mmseg_heads.models.fusion import FUSIONS
from mmseg_heads.models.levels import LevelSpec

VGG16_LEVELS = [(1, 64), (2, 128), (4, 256), (8, 512), (16, 512), (32, 512)]
RESNET50_LEVELS = [(2, 64), (4, 256), (8, 512), (16, 1024), (32, 2048)]


def model_cfg(**overrides) -> dict:
    cfg = {
        "encoders": {"optical": "resnet18", "thermal": "resnet18"},
        "pretrained": "none",
        "depth": 5,
        "fusion": "concat",
        "modality_dropout": 0.0,
        "decoder_channels": [32, 16, 16, 8, 8],
        "heads": {},
    }
    return cfg | overrides


@pytest.fixture(scope="module")
def seed_pair():
    return build_encoder("vgg16", in_channels=3), build_encoder("resnet50", in_channels=1)


def test_encoder_levels_are_read_from_the_encoder(seed_pair):
    vgg, resnet = seed_pair
    assert [(lv.stride, lv.channels) for lv in vgg.levels] == VGG16_LEVELS
    assert [(lv.stride, lv.channels) for lv in resnet.levels] == RESNET50_LEVELS


def test_seed_pair_at_512_gives_the_seed_notes_feature_maps(seed_pair):
    """VGG16: 64@512 … 512@16; ResNet50: 64@256 … 2048@16, as in the seed's notes."""
    vgg, resnet = seed_pair
    with torch.no_grad():
        vgg_out = vgg.eval()(torch.zeros(1, 3, 512, 512))
        resnet_out = resnet.eval()(torch.zeros(1, 1, 512, 512))
    assert [(f.shape[1], f.shape[-1]) for f in vgg_out.values()] == [
        (64, 512), (128, 256), (256, 128), (512, 64), (512, 32), (512, 16)
    ]  # fmt: skip
    assert [(f.shape[1], f.shape[-1]) for f in resnet_out.values()] == [
        (64, 256), (256, 128), (512, 64), (1024, 32), (2048, 16)
    ]  # fmt: skip


def test_trunk_fuses_vgg16_and_resnet50_by_stride():
    model = build_model(
        model_cfg(encoders={"optical": "vgg16", "thermal": "resnet50"}, decoder_channels=[16] * 5),
        modalities={"optical": 3, "thermal": 1},
        tasks={"shapes": 4},
    )
    trunk = model.trunk
    assert [lv.stride for lv in trunk.levels] == [1, 2, 4, 8, 16, 32]
    # Stride 1 exists only in VGG16; every other stride fuses both, at the wider width.
    assert trunk.levels == [
        LevelSpec(s, c) for s, c in [(1, 64), (2, 128), (4, 256), (8, 512), (16, 1024), (32, 2048)]
    ]
    out = trunk({"optical": torch.zeros(1, 3, 64, 64), "thermal": torch.zeros(1, 1, 64, 64)})
    fused, per_group = out.fused, out.per_group
    assert {s: tuple(f.shape[1:]) for s, f in fused.items()} == {
        lv.stride: (lv.channels, 64 // lv.stride, 64 // lv.stride) for lv in trunk.levels
    }
    assert set(per_group["optical"]) == {1, 2, 4, 8, 16, 32}
    assert set(per_group["thermal"]) == {2, 4, 8, 16, 32}


@pytest.mark.parametrize("fusion", FUSIONS.names())
@pytest.mark.parametrize("decoder", ["shared", "own"])
def test_each_head_outputs_its_own_class_count(fusion, decoder):
    tasks = {"a": 2, "b": 5, "c": 3}
    model = build_model(
        model_cfg(fusion=fusion, heads={t: {"source": "fused", "decoder": decoder} for t in tasks}),
        modalities={"optical": 3, "thermal": 1},
        tasks=tasks,
    )
    logits = model({"optical": torch.randn(2, 3, 64, 64), "thermal": torch.randn(2, 1, 64, 64)})
    assert {t: tuple(v.shape) for t, v in logits.items()} == {
        t: (2, c, 64, 64) for t, c in tasks.items()
    }
    assert (model.decoder is None) == (decoder == "own")


def test_head_on_one_modality_has_no_path_to_the_other_encoder():
    model = build_model(
        model_cfg(heads={"hot": {"source": "thermal", "decoder": "own"}}),
        modalities={"optical": 3, "thermal": 1},
        tasks={"hot": 2, "shapes": 4},
    )
    logits = model({"optical": torch.randn(2, 3, 64, 64), "thermal": torch.randn(2, 1, 64, 64)})
    logits["hot"].sum().backward()
    grads = {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
        for name, enc in model.trunk.encoders.items()
    }
    assert grads == {"optical": False, "thermal": True}


def test_fused_head_gradients_reach_every_encoder():
    model = build_model(model_cfg(), modalities={"optical": 3, "thermal": 1}, tasks={"shapes": 4})
    logits = model({"optical": torch.randn(2, 3, 64, 64), "thermal": torch.randn(2, 1, 64, 64)})
    logits["shapes"].sum().backward()
    for name, encoder in model.trunk.encoders.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), (
            name
        )


def test_grouped_and_shared_encoders():
    grouped = build_model(
        model_cfg(encoders={"optical+thermal": "resnet18"}),
        modalities={"optical": 3, "thermal": 1},
        tasks={"t": 2},
    )
    assert grouped.trunk.encoders["optical+thermal"].in_channels == 4
    shared = build_model(
        model_cfg(encoders={"shared": "resnet18"}), modalities={"a": 1, "b": 1}, tasks={"t": 2}
    )
    assert shared.trunk.encoders["a"] is shared.trunk.encoders["b"]
    out = shared({"a": torch.randn(2, 1, 32, 32), "b": torch.randn(2, 1, 32, 32)})
    assert out["t"].shape == (2, 2, 32, 32)


def test_decoder_channels_of_the_wrong_length_name_the_field():
    with pytest.raises(UserError, match=r"model.decoder_channels.*needs 5 values"):
        build_model(
            model_cfg(decoder_channels=[16, 8]),
            modalities={"optical": 3, "thermal": 1},
            tasks={"t": 2},
        )


def test_input_not_divisible_by_the_largest_stride_says_how_to_pad():
    model = build_model(model_cfg(), modalities={"optical": 3, "thermal": 1}, tasks={"t": 2})
    with pytest.raises(ValueError, match=r"pad to \(64, 64\)"):
        model({"optical": torch.randn(1, 3, 50, 60), "thermal": torch.randn(1, 1, 50, 60)})


def test_local_pretrained_weights_are_loaded(tmp_path):
    source = build_encoder("resnet18", in_channels=3)
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.fill_(0.125)
    path = tmp_path / "weights.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = build_encoder("resnet18", in_channels=3, pretrained=str(path))
    assert torch.equal(loaded.backbone.conv1.weight, source.backbone.conv1.weight)


@pytest.mark.parametrize("prefix", ["vgg.", "module.encoder."])
def test_whole_model_weight_files_load_from_under_their_prefix(tmp_path, prefix):
    """unet-pytorch saves whole U-Nets: its VGG16 tensors are named ``vgg.features.0.weight``."""
    source = build_encoder("vgg16", in_channels=3)
    with torch.no_grad():
        for index, p in enumerate(source.backbone.parameters()):
            p.fill_(index / 100)
    whole_model = {prefix + k: v for k, v in source.backbone.state_dict().items()}
    whole_model["final.weight"] = torch.ones(21, 64, 1, 1)  # the rest of their U-Net
    whole_model["up_concat4.conv1.weight"] = torch.ones(512, 1024, 3, 3)
    path = tmp_path / "unet_vgg_voc.pth"
    torch.save(whole_model, path)
    loaded = build_encoder("vgg16", in_channels=3, pretrained=str(path))
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], value), name


def test_local_weights_adapt_the_first_conv_to_one_channel(tmp_path):
    source = build_encoder("resnet18", in_channels=3)
    path = tmp_path / "weights.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = build_encoder("resnet18", in_channels=1, pretrained=str(path))
    # smp's rule for a 1-channel input: the sum of the RGB kernels.
    expected = source.backbone.conv1.weight.sum(1, keepdim=True)
    assert torch.allclose(loaded.backbone.conv1.weight, expected)
    assert torch.equal(
        loaded.backbone.layer1[0].conv1.weight, source.backbone.layer1[0].conv1.weight
    )


def test_pretrained_file_of_the_wrong_kind_is_a_user_error(tmp_path):
    path = tmp_path / "not_weights.pt"
    path.write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch weights file"):
        build_encoder("resnet18", in_channels=3, pretrained=str(path))


def test_tiny_model_overfits_four_images():
    torch.manual_seed(0)
    from mmseg_heads.losses.multitask import MultiTaskLoss
    from mmseg_heads.losses.task_loss import TaskLoss

    model = build_model(
        model_cfg(), modalities={"optical": 3, "thermal": 1}, tasks={"shapes": 3, "hot": 2}
    )
    images = {"optical": torch.randn(4, 3, 32, 32), "thermal": torch.randn(4, 1, 32, 32)}
    labels = {
        "shapes": (images["optical"][:, 0] > 0).long() + (images["optical"][:, 1] > 1).long(),
        "hot": (images["thermal"][:, 0] > 0.5).long(),
    }
    criterion = MultiTaskLoss(
        {
            t: TaskLoss({"ce": {"weight": 1.0}, "dice": {"weight": 1.0}}, ignore_index=255)
            for t in labels
        }
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss, _ = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] <= 0.5 * losses[0], losses


def test_timm_encoder_without_a_stride_2_stage_has_no_empty_level():
    encoder = build_encoder("tu-convnext_atto", in_channels=1)
    assert [lv.stride for lv in encoder.levels] == [4, 8, 16, 32]
    assert all(level.channels > 0 for level in encoder.levels)


def test_config_picks_the_strides_that_feed_the_decoder():
    model = build_model(
        model_cfg(encoders={"optical": "vgg16", "thermal": "resnet18"}, strides=[2, 8, 32]),
        modalities={"optical": 3, "thermal": 1},
        tasks={"t": 2},
    )
    assert [lv.stride for lv in model.trunk.levels] == [2, 8, 32]
    assert sorted(int(k) for k in model.trunk.fusions) == [2, 8, 32]
    out = model({"optical": torch.randn(2, 3, 64, 64), "thermal": torch.randn(2, 1, 64, 64)})
    assert out["t"].shape == (2, 2, 64, 64)
    with pytest.raises(UserError, match=r"model.strides: must include the deepest stride 32"):
        build_model(
            model_cfg(strides=[2, 4]), modalities={"optical": 3, "thermal": 1}, tasks={"t": 2}
        )
    with pytest.raises(UserError, match=r"strides \[3\] are not levels"):
        build_model(
            model_cfg(strides=[3, 32]), modalities={"optical": 3, "thermal": 1}, tasks={"t": 2}
        )
