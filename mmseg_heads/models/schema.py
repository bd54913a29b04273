"""The ``model`` section's schema, built from the registries when it is asked for.

A fusion or head kind registered after ``mmseg_heads`` is imported is a valid choice from then on:
nothing here is frozen at import time. :func:`fill_model_defaults` gives a plain dict the schema's
defaults, so ``build_model({"encoders": {...}}, ...)`` works from a notebook.
"""

from __future__ import annotations

from mmseg_heads.models.fusion import FUSIONS
from mmseg_heads.models.gates import GATES, NO_GATE
from mmseg_heads.models.heads import HEADS
from mmseg_heads.schema import Field, ListOf, MapOf, OneOf, Struct, validate

ENCODER_SCHEMA = OneOf(
    [
        Field(str, doc="encoder name"),
        Struct(
            {
                "name": Field(str, doc="encoder name"),
                "pretrained": Field(str, default=None, doc="none | imagenet | PATH"),
            }
        ),
    ],
    doc="an smp encoder name (`resnet50`, `vgg16`, …), `tu-<timm name>` or one registered in "
    "`ENCODERS`; or {name, pretrained}",
)


def head_schema() -> Struct:
    return Struct(
        {
            "source": Field(
                str,
                default="fused",
                doc="`fused`, or a modality (or encoder group) to branch off before fusion",
            ),
            "decoder": Field(
                str,
                default="shared",
                choices=tuple(HEADS.names()),
                doc="`shared` trunk decoder + classifier, or `own` decoder",
            ),
            "gate": Field(
                str,
                default="none",
                choices=(NO_GATE, *GATES.names()),
                doc="`attention`: task-specific modality attention + additive attention gates (Oktay et al. 2018)",
            ),
        }
    )


def head_defaults() -> dict:
    """The options of a task that ``model.heads`` does not list."""
    return validate(head_schema(), {}, file="model.heads")


def model_schema() -> Struct:
    return Struct(
        {
            "encoders": MapOf(
                ENCODER_SCHEMA,
                min_items=1,
                doc='`{modality: encoder}`, `{shared: encoder}` or `{"A+B": encoder}` (stacked)',
            ),
            "pretrained": Field(
                str, default="none", doc="default for every encoder: none | imagenet | PATH"
            ),
            "depth": Field(
                int, default=5, minimum=3, maximum=5, doc="encoder stages (5: strides up to 32)"
            ),
            "fusion": Field(
                str,
                default="concat",
                choices=tuple(FUSIONS.names()),
                doc="per-stride fusion: concat (+1×1 conv), sum (project + add), attention (softmax over modalities)",
            ),
            "strides": ListOf(
                Field(int, minimum=1),
                default=None,
                doc="strides whose fused levels feed the decoders (default all; must include the deepest)",
            ),
            "modality_dropout": Field(
                float,
                default=0.0,
                minimum=0.0,
                maximum=0.9,
                doc="training: probability of dropping each modality from the fusion per sample (never all)",
            ),
            "decoder_channels": ListOf(
                Field(int, minimum=1),
                default=lambda: [256, 128, 64, 32, 16],
                doc="channels of each decoder block, deepest first",
            ),
            "heads": MapOf(
                head_schema(),
                default=dict,
                doc="one head per task (a task not listed gets the defaults)",
            ),
        },
        doc="the network",
    )


def fill_model_defaults(model: dict, *, file: str = "model") -> dict:
    """``model`` validated against :func:`model_schema`, every omitted key at its default.

    Raises:
        ConfigError: one line per problem, with the dotted field under ``model``.
    """
    return validate(model_schema(), model, file=file)
