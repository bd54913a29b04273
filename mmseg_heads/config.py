"""Experiment configs: one YAML file (data, model, loss, train, eval), validated before any work.

:func:`load_config` applies dotted ``key=value`` overrides, checks the file against
:func:`config_schema` (every problem at once, each naming the file and the dotted field), loads the
data spec it points to and checks cross-references (heads and losses name real tasks, encoders
cover every modality, class-weight lists match class counts).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmseg_heads.data.augment import AugmentSchema
from mmseg_heads.data.augment.presets import augment_modalities
from mmseg_heads.data.spec import DataSpec, load_data_spec, load_yaml, parse_yaml, yaml_problem
from mmseg_heads.data.transforms import TTA_FLIPS
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.losses.multitask import WEIGHTINGS
from mmseg_heads.losses.task_loss import LOSS_TERMS
from mmseg_heads.models.build import check_encoders, encoder_groups
from mmseg_heads.models.schema import model_schema
from mmseg_heads.schema import FILL, Field, ListOf, MapOf, OneOf, Struct, ascending, validate

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "poly", "step", "constant")


def _term(term: type) -> OneOf:
    """A loss term's entry: a bare weight, or ``{weight, **its options}``."""
    return OneOf(
        [
            Field(float, minimum=0.0),
            Struct({"weight": Field(float, default=1.0, minimum=0.0), **term.options}),
        ],
        default=None,
        doc=term.doc,
    )


def task_loss_schema() -> Struct:
    """The loss terms of one task, one entry per registered term (read at call time)."""
    return Struct(
        {name: _term(LOSS_TERMS.get(name)) for name in LOSS_TERMS.names()},
        doc="loss terms of one task (default `{ce: 1.0, dice: 1.0}`)",
    )


def config_schema() -> Struct:
    """The whole config's schema, built from the registries each time (so a fusion, head, loss
    term or augmentation registered after import is a valid choice)."""
    return Struct(
        {
            "data": Field(str, doc="data spec file (relative to this config)"),
            "model": model_schema(),
            "loss": Struct(
                {
                    "task_weighting": Field(
                        str,
                        default="fixed",
                        choices=WEIGHTINGS,
                        doc="fixed (`task_weights`) or uncertainty (learned per-task weights, Kendall et al. 2018)",
                    ),
                    "task_weights": MapOf(
                        Field(float, minimum=0.0), default=dict, doc="`{task: weight}`, default 1"
                    ),
                },
                extra=task_loss_schema(),
                default=FILL,
                doc="per-task loss terms by task name, plus the keys below",
            ),
            "train": Struct(
                {
                    "epochs": Field(
                        int, default=40, minimum=1, doc="passes over the training split"
                    ),
                    "steps": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="optimizer steps to train instead of `epochs` (MMSegmentation's "
                        "iterations): as many epochs as they need, the last cut short; the LR "
                        "schedule spans them",
                    ),
                    "batch_size": OneOf(
                        [Field(int, minimum=1), Field(str, choices=("auto",))],
                        default=8,
                        doc="samples per step and process; `auto`: the largest that fits the GPU's "
                        "memory budget, or the fastest per sample on the CPU (printed)",
                    ),
                    "crop": Field(
                        int, default=256, minimum=32, doc="side of the random square training crop"
                    ),
                    "hflip": Field(bool, default=True, doc="random left-right flips"),
                    "vflip": Field(bool, default=False, doc="random up-down flips"),
                    "augment": AugmentSchema(),
                    "crop_foreground": Field(
                        float,
                        default=0.0,
                        minimum=0.0,
                        maximum=1.0,
                        doc="chance that a crop is centred near a random labelled foreground pixel "
                        "(a class first, then a pixel); otherwise the crop is placed uniformly",
                    ),
                    "resize": OneOf(
                        [
                            Field(int, minimum=8),
                            ListOf(
                                Field(int, minimum=8),
                                min_items=2,
                                max_items=2,
                                check=ascending,
                            ),
                        ],
                        default=None,
                        doc="training: scale each image so its shorter side is N px, or a side drawn "
                        "from [low, high] (scale jitter); default: native size",
                    ),
                    "lr": Field(float, default=1e-3, minimum=0.0),
                    "weight_decay": Field(float, default=1e-4, minimum=0.0),
                    "optimizer": Field(str, default="adamw", choices=("adamw", "adam", "sgd")),
                    "grad_clip": Field(
                        float, default=None, minimum=0.0, doc="clip the gradient norm to this value"
                    ),
                    "schedule": Field(
                        str,
                        default="cosine",
                        choices=SCHEDULES,
                        doc="LR schedule over optimizer steps: cosine to 0, poly (power 0.9), step, constant",
                    ),
                    "warmup_epochs": Field(
                        float,
                        default=0.0,
                        minimum=0.0,
                        doc="linear LR warm-up from 0 (fractions allowed)",
                    ),
                    "step_epochs": Field(
                        int,
                        default=30,
                        minimum=1,
                        doc="`schedule: step`: multiply the LR by 0.1 every N epochs",
                    ),
                    "encoder_lr_mult": Field(
                        float,
                        default=1.0,
                        minimum=0.0,
                        doc="encoders' LR = lr × this (e.g. 0.1 for pretrained)",
                    ),
                    "accumulate": Field(
                        int,
                        default=1,
                        minimum=1,
                        doc="gradient accumulation: batches per optimizer step",
                    ),
                    "freeze_encoders_epochs": Field(
                        int,
                        default=0,
                        minimum=0,
                        doc="train the first N epochs with encoders frozen (weights and BatchNorm statistics)",
                    ),
                    "unfreeze_batch_size": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="batch size once encoders unfreeze (default: batch_size)",
                    ),
                    "checkpoint_every": Field(
                        int,
                        default=0,
                        minimum=0,
                        doc="also keep checkpoints/epoch_<N>.pt every N epochs (0: off)",
                    ),
                    "keep_checkpoints": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="keep only the newest N epoch_<N>.pt files (best.pt and last.pt "
                        "always stay); default: all",
                    ),
                    "precision": Field(
                        str,
                        default="auto",
                        choices=PRECISIONS,
                        doc="auto: bf16 autocast where the CPU/GPU supports it, else fp16 + loss "
                        "scaling on CUDA, else fp32",
                    ),
                    "workers": Field(int, default=2, minimum=0, doc="data loader processes"),
                    "threads": OneOf(
                        [Field(int, minimum=1), Field(str, choices=("auto",))],
                        default="auto",
                        doc="CPU threads of torch's operators; `auto`: the usable cores that are "
                        "idle at start (a core busy with other work slows every step), logged",
                    ),
                    "compile": Field(
                        bool,
                        default=False,
                        doc="run training steps through torch.compile: 1.3× per step on a GPU, none "
                        "on a CPU (docs/performance.md §9); the first steps wait for the compiler",
                    ),
                    "sync_batchnorm": Field(
                        bool,
                        default=False,
                        doc="under torchrun: BatchNorm statistics over all processes (CUDA only)",
                    ),
                    "tensorboard": Field(
                        bool,
                        default=False,
                        doc="also log to RUN_DIR/tensorboard (needs the `tensorboard` extra)",
                    ),
                    "seed": Field(int, default=0),
                    "out": Field(
                        str, default=None, doc="run directory (default `runs/<config name>`)"
                    ),
                },
                default=FILL,
            ),
            "eval": Struct(
                {
                    "beta": Field(float, default=1.0, minimum=0.0, doc="F-beta's beta"),
                    "split": Field(
                        str, default="val", doc="split evaluated each epoch and by `evaluate`"
                    ),
                    "select_by": Field(
                        str,
                        default="mean_foreground_f",
                        doc="`mean_foreground_f` or `<task>` (its macro foreground F)",
                    ),
                    "window": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="sliding-window side in pixels, a multiple of the model's largest "
                        "stride; omitted: whole images (see Inference in predict_export.md)",
                    ),
                    "overlap": Field(
                        float,
                        default=0.5,
                        minimum=0.0,
                        check=lambda v: None if v < 1 else "must be below 1",
                        doc="fraction of a window shared with its neighbour (with `window`)",
                    ),
                    "tta": ListOf(
                        Field(str, choices=tuple(TTA_FLIPS)),
                        default=[],
                        check=lambda v: None if len(set(v)) == len(v) else "names a flip twice",
                        doc="test-time flips whose probabilities are averaged, e.g. "
                        "`[hflip, vflip]` (every combination: 4 passes)",
                    ),
                    "nesting": Field(
                        str,
                        default="both",
                        choices=("on", "off", "both"),
                        doc="the data spec's `inside` rules on predictions: `on` (masks and scores "
                        "nested), `off`, or `both` (masks and scores as the model gives them, "
                        "nested scores beside them)",
                    ),
                },
                default=FILL,
            ),
        }
    )


def __getattr__(name: str):
    # ``CONFIG_SCHEMA`` reads the registries as they are now, like ``config_schema()``.
    if name == "CONFIG_SCHEMA":
        return config_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Config:
    """A validated config and the data spec it points to."""

    path: Path
    raw: dict
    spec: DataSpec

    @property
    def model(self) -> dict:
        return self.raw["model"]

    @property
    def loss(self) -> dict:
        return self.raw["loss"]

    @property
    def train(self) -> dict:
        return self.raw["train"]

    @property
    def eval(self) -> dict:
        return self.raw["eval"]

    def run_dir(self) -> Path:
        return Path(self.train["out"] or Path("runs") / self.path.stem)


def apply_overrides(raw: dict, overrides: list[str], file: str) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a copy of ``raw``."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            example = f"{key or 'train.lr'}=VALUE"
            raise UserError(
                f"override {item!r} must look like key.sub=value, e.g. {example}",
                file=file,
                field=key or item,
            )
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise UserError(
                    f"override {item!r}: {part!r} is not a section", file=file, field=key
                )
            node = node[part]
        try:
            # An override replaces the file's value (no duplicate); keys repeated inside its
            # value (`'loss.shapes={ce: 1, ce: 2}'`) are.
            node[parts[-1]] = parse_yaml(text, file, field=key)
        except yaml.YAMLError as exc:
            raise UserError(
                f"override {item!r}: value is not valid YAML ({yaml_problem(exc)[1]}); write a "
                "YAML value, e.g. train.lr=3e-4, model.fusion=sum or 'loss.shapes={ce: 1.0}'",
                file=file,
                field=key,
            ) from exc
    return raw


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    data: str | Path | None = None,
    data_root: str | Path | None = None,
) -> Config:
    """Load, override and validate a config; ``data`` replaces its data spec, ``data_root`` the
    spec's ``root``."""
    path = Path(path)
    raw = apply_overrides(load_yaml(path), overrides or [], str(path))
    check_one_budget(raw, path)
    raw = validate(config_schema(), raw, file=str(path))
    spec_path = (
        Path(data) if data is not None else Path(os.path.normpath(path.parent / raw["data"]))
    )
    if spec_path.is_dir():
        raise UserError(data_folder_message(spec_path), file=path, field="data")
    if not spec_path.is_file():
        raise UserError(f"data spec {spec_path} not found", file=path, field="data")
    spec = load_data_spec(spec_path, data_root=data_root)
    check_cross_references(raw, spec, file=str(path))
    return Config(path=path, raw=raw, spec=spec)


def check_one_budget(raw: dict, path: Path) -> None:
    """``train.steps`` and ``train.epochs`` both given: which one would end the run?"""
    section = raw.get("train") if isinstance(raw, dict) else None
    if isinstance(section, dict) and section.get("steps") is not None and "epochs" in section:
        raise UserError(
            "give train.steps or train.epochs, not both (steps: optimizer steps in all; "
            "epochs: passes over the training split)",
            file=path,
            field="train.steps",
        )


def data_folder_message(folder: Path) -> str:
    """Why a folder given as the config's ``data`` is wrong, and the YAML files in it to pick."""
    found = sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    listing = (
        f"; it holds {', '.join(str(p) for p in found[:5])}"
        + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        if found
        else "; it holds no .yaml file"
    )
    return (
        f"{folder} is a folder; `data` names a data spec, a YAML file (paths relative to the "
        f"config's folder){listing}"
    )


def config_from_dict(raw: dict, spec: DataSpec, path: Path) -> Config:
    """Rebuild a Config from a resolved mapping (as stored in a checkpoint)."""
    raw = validate(config_schema(), raw, file=str(path))
    check_cross_references(raw, spec, file=str(path))
    return Config(path=path, raw=raw, spec=spec)


def check_cross_references(raw: dict, spec: DataSpec, *, file: str) -> None:
    """Heads, losses and encoders must name tasks and modalities of the data spec."""
    modalities = spec.input_channels()
    tasks = {t.name: t.num_classes for t in spec.tasks.values()}
    problems = check_encoders(raw["model"]["encoders"], modalities)
    where = f"(in {spec.path})"
    groups = encoder_groups(raw["model"]["encoders"], list(modalities)) if not problems else {}
    for task, head in raw["model"]["heads"].items():
        if task not in tasks:
            problems.append(
                UserError(
                    f"{task!r} is not a task of {spec.path} (tasks: {', '.join(tasks)})",
                    field=f"model.heads.{task}",
                )
            )
        source = head["source"]
        if source != "fused" and groups and source not in groups:
            problems.append(
                UserError(
                    f"{source!r} is not a modality with its own encoder {where} "
                    f"(choose fused or one of: {', '.join(groups)})",
                    field=f"model.heads.{task}.source",
                )
            )
        if source != "fused" and head["decoder"] == "shared":
            problems.append(
                UserError(
                    "a head on one modality needs `decoder: own` (the shared decoder reads fused features)",
                    field=f"model.heads.{task}.decoder",
                )
            )
    fixed = {"task_weighting", "task_weights"}
    for task, terms in raw["loss"].items():
        if task in fixed:
            continue
        if task not in tasks:
            problems.append(
                UserError(
                    f"{task!r} is not a task of {spec.path} (tasks: {', '.join(tasks)})",
                    field=f"loss.{task}",
                )
            )
            continue
        if not any(options is not None for options in terms.values()):
            problems.append(
                UserError(
                    f"give at least one loss term ({', '.join(LOSS_TERMS.names())}), or leave the "
                    "task out for the default {ce: 1.0, dice: 1.0}",
                    field=f"loss.{task}",
                )
            )
        for term, options in terms.items():
            if isinstance(options, dict):
                for key in ("class_weights", "alpha"):
                    if isinstance(options.get(key), list) and len(options[key]) != tasks[task]:
                        problems.append(
                            UserError(
                                f"needs {tasks[task]} values, one per class, got {len(options[key])}",
                                field=f"loss.{task}.{term}.{key}",
                            )
                        )
    for task in raw["loss"]["task_weights"]:
        if task not in tasks:
            problems.append(
                UserError(
                    f"{task!r} is not a task (tasks: {', '.join(tasks)})",
                    field=f"loss.task_weights.{task}",
                )
            )
    for index, name, selected in augment_modalities(raw["train"]["augment"]):
        for modality in selected:
            if modality not in modalities:
                problems.append(
                    UserError(
                        f"{modality!r} is not a modality {where} (modalities: {', '.join(modalities)})",
                        field=f"train.augment[{index}].{name}.modalities",
                    )
                )
    select = raw["eval"]["select_by"]
    if select != "mean_foreground_f" and select not in tasks:
        problems.append(
            UserError(
                f"must be mean_foreground_f or a task ({', '.join(tasks)})", field="eval.select_by"
            )
        )
    if problems:
        for problem in problems:
            problem.file = problem.file or file
        raise ConfigError(problems)


def task_loss_terms(loss: dict, task: str) -> dict[str, dict]:
    """``{term: options}`` for one task, ``{ce: 1, dice: 1}`` by default; a bare number is a weight."""
    terms = loss.get(task) or {"ce": 1.0, "dice": 1.0}
    return {
        name: ({"weight": value} if not isinstance(value, dict) else value)
        for name, value in terms.items()
        if value is not None
    }
