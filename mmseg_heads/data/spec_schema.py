"""The data spec's schema (:data:`DATA_SPEC_SCHEMA`): every key, its type, default and doc.

The schema checks each field on its own: types, choices, ranges, a file pattern's ``{id}``, a
volume's ``keep`` rule; what spans fields is :mod:`mmseg_heads.data.spec_checks`'.
``docs/data_spec.md`` is generated from the schema.
"""

from __future__ import annotations

import re

from mmseg_heads.data.labels import LABEL_FORMATS
from mmseg_heads.palette import Colour
from mmseg_heads.schema import Any_, Field, ListOf, MapOf, OneOf, Struct

NORMALIZATIONS = ("zscore", "minmax", "imagenet", "none")


def _check_pattern(value: str) -> str | None:
    return None if "{id}" in value else "must contain '{id}', e.g. 'images/{id}.png'"


MODALITY_SCHEMA = Struct(
    {
        "files": Field(
            str, doc="file pattern with `{id}`, relative to `root`", check=_check_pattern
        ),
        "channels": Field(int, default=1, minimum=1, doc="channels of one image (3 for RGB)"),
        "normalize": OneOf(
            [
                Field(str, choices=NORMALIZATIONS),
                Struct(
                    {
                        "mean": ListOf(Field(float), default=None),
                        "std": ListOf(Field(float), default=None),
                        "scale": Field(float, default=None),
                    }
                ),
            ],
            default="zscore",
            doc="per-image normalisation: zscore, minmax, imagenet, none, {mean, std} or {scale}",
        ),
        "clip_percentiles": ListOf(
            Field(float, minimum=0.0, maximum=100.0),
            default=None,
            doc="`[low, high]`: clip each image and channel to these percentiles before `normalize`",
        ),
    },
    doc="one input modality",
)

TASK_SCHEMA = Struct(
    {
        "labels": Field(str, doc="label file pattern with `{id}`", check=_check_pattern),
        "label_format": Field(
            str,
            default="index",
            choices=LABEL_FORMATS,
            doc="`index`: a pixel's raw value is its class (through `values` or `threshold`); "
            "`colour`: label files are RGB colour masks, a pixel's colour is its class through "
            "`colors`",
        ),
        "classes": ListOf(
            Field(str), min_items=2, doc="class names; index 0 first (usually background)"
        ),
        "values": Any_(
            default=None,
            shape="mapping raw value -> class index | 'ignore'",
            doc="raw label value -> class index or `ignore`; key `other` catches the rest; default identity",
        ),
        "threshold": Field(
            float, default=None, doc="binary masks: raw > threshold is class 1, else 0"
        ),
        "ignore": ListOf(Field(int), default=list, doc="raw values excluded from loss and metrics"),
        "optional": Field(
            bool, default=False, doc="samples without a label file train the other tasks"
        ),
        "annotated_on": ListOf(Field(str), default=list, doc="modalities the labels were drawn on"),
        "inside": MapOf(
            ListOf(Field(str), min_items=1),
            default=None,
            doc="`{task: [classes]}`: this task's foreground lies inside those classes of another "
            "task (MyoPS: scar inside edema); `eval.nesting` applies it to predictions",
        ),
        "colors": MapOf(
            Colour(),
            default=None,
            doc='class name -> `[r, g, b]` (0-255) or `"#rrggbb"`: the class\'s colour in '
            "predicted masks, overlays and report figures; unlisted classes keep the default; "
            "with `label_format: colour` also its colour in the label files (every class then "
            "needs a distinct one)",
        ),
        "ignore_colors": ListOf(
            Colour(),
            default=list,
            doc='`label_format: colour`: colours (`[r, g, b]` or `"#rrggbb"`) whose pixels are '
            "excluded from loss and metrics, e.g. VOC's border `[224, 224, 192]`",
        ),
    },
    doc="one task with its own label set",
)

SPLIT_SCHEMA = Struct(
    {
        "ids": Field(
            str,
            default=None,
            doc="text file with one id per line (next to the spec, else under `root`)",
        ),
        "pattern": Field(str, default=None, doc="regular expression searched in each id"),
        "fraction": Field(
            float, default=None, minimum=0.0, maximum=1.0, doc="random share of the ids"
        ),
        "seed": Field(int, default=0, doc="seed of the `fraction` draw"),
    },
    doc="exactly one of `ids`, `pattern`, `fraction`",
)

KEEP_RULE = re.compile(r"^(all|labelled)(?:\+(\d+))?$")


def _check_keep(value: str) -> str | None:
    match = KEEP_RULE.match(value)
    if match and not (match.group(1) == "all" and match.group(2)):
        return None
    return "must be all, labelled or labelled+N (N slices kept on each side), e.g. labelled+2"


VOLUME_SCHEMA = Struct(
    {
        "slice_axis": Field(
            int, default=2, choices=(0, 1, 2), doc="array axis the 2-D slices are taken across"
        ),
        "keep": Field(
            str,
            default="all",
            check=_check_keep,
            doc="`all` slices, `labelled` ones, or `labelled+N`: also N slices on each side",
        ),
        "labelled_weight": Field(
            float,
            default=1.0,
            check=lambda value: None if value > 0 else "must be > 0",
            doc="training draws a labelled slice this many times as often as an unlabelled one",
        ),
        "cache": Field(
            int, default=4, minimum=0, doc="decoded cases kept in memory per dataset and worker"
        ),
        "context": Field(
            int,
            default=0,
            minimum=0,
            maximum=8,
            doc="2.5-D: also feed slices i-k … i+k of each modality as its channels (edges "
            "replicated); a modality's input then has channels × (2k+1)",
        ),
    },
    default=None,
    doc="3-D files become 2-D slices with ids `{case}#{slice}`",
)

DATA_SPEC_SCHEMA = Struct(
    {
        "name": Field(str, default=None, doc="data set name (default: the file name)"),
        "root": Field(
            str, default=".", doc="folder the patterns are relative to (relative to the spec)"
        ),
        "modalities": MapOf(MODALITY_SCHEMA, min_items=1, doc="input modalities by name"),
        "tasks": MapOf(TASK_SCHEMA, min_items=1, doc="tasks by name, each with its own classes"),
        "splits": MapOf(
            SPLIT_SCHEMA, min_items=1, doc="named subsets of the ids (train, val, ...)"
        ),
        "volume": VOLUME_SCHEMA,
    }
)
