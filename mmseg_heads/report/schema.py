"""The JSON Schema of ``report.json`` (documented in ``docs/report.md``; a test validates real reports)."""

from __future__ import annotations

_SCORE = {"type": ["number", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_RGB = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 255},
    "minItems": 3,
    "maxItems": 3,
}

_PER_CLASS = {
    "type": "object",
    "required": ["tp", "fp", "fn", "support", "precision", "recall", "f", "iou", "dice", "absent"],
    "properties": {
        "tp": {"type": "integer", "minimum": 0},
        "fp": {"type": "integer", "minimum": 0},
        "fn": {"type": "integer", "minimum": 0},
        "support": {"type": "integer", "minimum": 0},
        "precision": _SCORE,
        "recall": _SCORE,
        "f": _SCORE,
        "iou": _SCORE,
        "dice": _SCORE,
        "absent": {"type": "boolean"},
        "reason": {"type": "string"},
    },
}

_TASK = {
    "type": "object",
    "required": [
        "classes",
        "beta",
        "confusion_matrix",
        "per_class",
        "macro_foreground_f",
        "macro_f",
        "micro_f",
        "pixel_accuracy",
        "annotated_on",
    ],
    "properties": {
        "classes": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "beta": {"type": "number"},
        "confusion_matrix": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer"}},
        },
        "per_class": {"type": "object", "additionalProperties": _PER_CLASS},
        "macro_foreground_f": _SCORE,
        "macro_f": _SCORE,
        "macro_iou": _SCORE,
        "macro_foreground_iou": _SCORE,
        # Optional like the IoU means: reports written before they existed stay valid.
        "macro_dice": _SCORE,
        "macro_foreground_dice": _SCORE,
        "micro_f": _SCORE,
        "pixel_accuracy": _SCORE,
        "pixels": {"type": "integer"},
        "annotated_on": {"type": "array", "items": {"type": "string"}},
        # One [r, g, b] per class; absent from reports written before data specs had `colors`.
        "palette": {"type": "array", "items": _RGB},
    },
}

_ABLATED_TASK = {
    "type": "object",
    "required": ["macro_foreground_f", "full", "delta", "per_class"],
    "properties": {
        "macro_foreground_f": _SCORE,
        "full": _SCORE,
        "delta": _NULLABLE_NUMBER,
        # a head on the missing modality alone: its scores are null, this says why
        "not_applicable": {"type": "string"},
        "per_class": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["f", "full", "delta"],
                "properties": {"f": _SCORE, "full": _SCORE, "delta": _NULLABLE_NUMBER},
            },
        },
    },
}

# Per-case scores of volumes (mmseg_heads.metrics.per_case): a null value carries its reason.
_CASE_SCORES = {
    "type": "object",
    "required": ["dice", "hd95"],
    "properties": {
        "dice": _SCORE,
        "hd95": {"type": ["number", "null"], "minimum": 0},
        # e.g. "empty label", "empty prediction", "empty in label and prediction"
        "reason": {"type": "string"},
    },
}

_MEAN_SD = {
    "type": "object",
    "required": ["mean", "sd", "n"],
    "properties": {
        "mean": _NULLABLE_NUMBER,
        "sd": {"type": ["number", "null"], "minimum": 0},
        "n": {"type": "integer", "minimum": 0},
    },
}

_PER_CASE_TASK = {
    "type": "object",
    "required": ["unit", "cases", "summary"],
    "properties": {
        "unit": {"enum": ["mm", "voxel"]},
        "cases": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _CASE_SCORES},
        },
        "summary": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["dice", "hd95"],
                "properties": {"dice": _MEAN_SD, "hd95": _MEAN_SD},
            },
        },
    },
}

REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mmseg_heads report.json",
    "type": "object",
    "required": [
        "schema_version",
        "split",
        "checkpoint",
        "data_spec",
        "epoch",
        "samples",
        "tasks",
        "per_sample",
        "gates",
        "examples",
    ],
    "properties": {
        "schema_version": {"const": 1},
        "split": {"type": "string"},
        "checkpoint": {"type": "string"},
        "run_dir": {"type": "string"},
        "data_spec": {"type": "string"},
        "epoch": {"type": "integer"},
        "samples": {"type": "integer"},
        "precision": {"enum": ["fp32", "bf16", "fp16"]},
        "missing_modalities": {"type": "array", "items": {"type": "string"}},
        "preprocessing": {
            "type": "object",
            "required": ["modalities", "context"],
            "properties": {
                "modalities": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["channels", "normalize", "clip_percentiles"],
                    },
                },
                "context": {"type": "integer", "minimum": 0},
            },
        },
        "inference": {
            "type": "object",
            "required": ["window", "overlap", "tta"],
            "properties": {
                "window": {"type": ["integer", "null"], "minimum": 1},
                "overlap": {"type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 1},
                "tta": {"type": "array", "items": {"enum": ["hflip", "vflip"]}},
                "nesting": {"enum": ["on", "off", "both"]},
            },
        },
        "with_nesting": {"type": "object", "additionalProperties": {"type": "object"}},
        "modalities": {"type": "object", "additionalProperties": {"type": "integer"}},
        "encoder_groups": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "fusion": {"type": "string"},
        "heads": {"type": "object"},
        "tasks": {"type": "object", "additionalProperties": _TASK, "minProperties": 1},
        "per_sample": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _SCORE},
        },
        "gates": {
            "type": "object",
            "required": ["heads", "fusion"],
            "properties": {
                "heads": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": {"type": "number"},
                    },
                },
                "fusion": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "examples": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "worst": {"type": "array", "items": {"type": "string"}},
                    "best": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        # Only for data specs with a `volume` section (absent for 2-D data and older reports).
        "per_case": {"type": "object", "additionalProperties": _PER_CASE_TASK},
        "ablation_path": {"type": "string"},
        "ablation": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _ABLATED_TASK},
        },
    },
}
