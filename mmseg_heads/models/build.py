"""Map the ``model`` section of a config to a :class:`MultiTaskSegmenter`."""

from __future__ import annotations

from mmseg_heads.errors import UserError
from mmseg_heads.models.decoder import UnetDecoder
from mmseg_heads.models.encoders import Encoder, build_encoder, encoder_name_problem
from mmseg_heads.models.heads import HEADS
from mmseg_heads.models.model import MultiTaskSegmenter
from mmseg_heads.models.schema import fill_model_defaults, head_defaults
from mmseg_heads.models.trunk import FusionTrunk

SHARED = "shared"


def encoder_groups(encoders: dict, modalities: list[str]) -> dict[str, tuple[str, ...]]:
    """``{encoder key: modalities it reads}``: ``shared`` reads each modality on its own."""
    if SHARED in encoders:
        return {m: (m,) for m in modalities}
    return {key: tuple(key.split("+")) for key in encoders}


def check_encoders(encoders: dict, modalities: dict[str, int]) -> list[UserError]:
    """Encoder names exist, every modality has exactly one encoder, shared ones see equal channels."""
    problems = []
    for key, value in encoders.items():
        name = value if isinstance(value, str) else value["name"]
        problem = encoder_name_problem(name)
        if problem:
            problems.append(UserError(problem, field=f"model.encoders.{key}"))
    if SHARED in encoders:
        if len(encoders) > 1:
            problems.append(
                UserError(
                    "`shared` cannot be mixed with other encoder keys", field="model.encoders"
                )
            )
        if len(set(modalities.values())) > 1:
            problems.append(
                UserError(
                    f"a shared encoder needs equal channel counts, got {modalities}; stack them "
                    "as a group instead, e.g. {'A+B': resnet50}",
                    field="model.encoders",
                )
            )
        return problems
    seen: dict[str, str] = {}
    for key in encoders:
        for modality in key.split("+"):
            if modality not in modalities:
                problems.append(
                    UserError(
                        f"{modality!r} is not a modality (modalities: {', '.join(modalities)})",
                        field=f"model.encoders.{key}",
                    )
                )
            elif modality in seen:
                problems.append(
                    UserError(
                        f"{modality!r} already feeds {seen[modality]!r}",
                        field=f"model.encoders.{key}",
                    )
                )
            seen[modality] = key
    for modality in modalities:
        if modality not in seen:
            problems.append(
                UserError(f"modality {modality!r} has no encoder", field="model.encoders")
            )
    return problems


def _encoder_options(value, default_pretrained: str) -> tuple[str, str]:
    if isinstance(value, str):
        return value, default_pretrained
    return value["name"], value.get("pretrained") or default_pretrained


def build_model(
    model: dict, *, modalities: dict[str, int], tasks: dict[str, int]
) -> MultiTaskSegmenter:
    """Build the model from a ``model`` config section, as a dict.

    Args:
        model: the config's ``model`` section; omitted keys take the schema's defaults, e.g.
            ``{"encoders": {"rgb": "resnet34", "depth": "resnet18"}}``.
        modalities: ``{modality: channels}``.
        tasks: ``{task: number of classes}``.

    Raises:
        ConfigError: the section does not fit the schema (one line per problem).
        UserError: an encoder cannot be built (unknown name, weights missing).
    """
    model = fill_model_defaults(model, file="build_model(model=…)")
    encoders_cfg = model["encoders"]
    groups = encoder_groups(encoders_cfg, list(modalities))
    built: dict[str, Encoder] = {}
    if SHARED in encoders_cfg:
        name, pretrained = _encoder_options(encoders_cfg[SHARED], model["pretrained"])
        shared = _build(name, next(iter(modalities.values())), pretrained, model["depth"], SHARED)
        built = {group: shared for group in groups}
    else:
        for group, members in groups.items():
            name, pretrained = _encoder_options(encoders_cfg[group], model["pretrained"])
            built[group] = _build(
                name, sum(modalities[m] for m in members), pretrained, model["depth"], group
            )
    trunk = FusionTrunk(
        built,
        groups,
        fusion=model["fusion"],
        modality_dropout=model["modality_dropout"],
        strides=model.get("strides"),
        modality_channels=modalities,
    )
    head_cfgs = {task: head_defaults() | model["heads"].get(task, {}) for task in tasks}
    needs_shared = any(HEADS.get(cfg["decoder"]).uses_shared_decoder for cfg in head_cfgs.values())
    decoder = UnetDecoder(trunk.levels, model["decoder_channels"]) if needs_shared else None
    heads = {}
    for task, cfg in head_cfgs.items():
        heads[task] = HEADS.get(cfg["decoder"])(
            num_classes=tasks[task],
            trunk=trunk,
            source=cfg["source"],
            gate=cfg["gate"],
            decoder_channels=model["decoder_channels"],
            shared_channels=decoder.out_channels if decoder is not None else 0,
        )
    return MultiTaskSegmenter(trunk, heads, decoder)


def _build(name: str, in_channels: int, pretrained: str, depth: int, key: str) -> Encoder:
    try:
        return build_encoder(name, in_channels=in_channels, pretrained=pretrained, depth=depth)
    except UserError as exc:
        exc.field = f"model.encoders.{key}" + (f".{exc.field}" if exc.field == "pretrained" else "")
        raise
