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

from mmseg_heads.config.schema import config_schema
from mmseg_heads.data.augment.presets import augment_modalities
from mmseg_heads.data.spec import DataSpec, load_data_spec, load_yaml, parse_yaml, yaml_problem
from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.losses.task_loss import LOSS_TERMS
from mmseg_heads.models.build import check_encoders, encoder_groups
from mmseg_heads.schema import validate

__all__ = [
    "CONFIG_SCHEMA",
    "Config",
    "apply_overrides",
    "check_cross_references",
    "config_from_dict",
    "config_schema",
    "load_config",
    "task_loss_terms",
]


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
