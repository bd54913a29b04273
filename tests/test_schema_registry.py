"""The declarative YAML schema (mmseg_heads.schema) and the name registry (mmseg_heads.registry)."""

from __future__ import annotations

import pytest

from mmseg_heads.errors import ConfigError, UserError
from mmseg_heads.registry import Registry
from mmseg_heads.schema import FILL, Field, ListOf, MapOf, OneOf, Struct, doc_rows, validate

FILE = "cfg.yaml"


def _problems(schema, value) -> list[UserError]:
    with pytest.raises(ConfigError) as info:
        validate(schema, value, file=FILE)
    return info.value.problems


# --- Registry --------------------------------------------------------------------------------


def test_registry_registers_and_returns_the_object():
    reg: Registry = Registry("widget")

    @reg.register("b")
    def build_b():
        return "b"

    assert reg.get("b") is build_b
    assert "b" in reg and "a" not in reg


def test_registry_duplicate_registration_raises():
    reg: Registry = Registry("widget")
    reg.register("x")(int)
    with pytest.raises(KeyError, match="widget 'x' is already registered"):
        reg.register("x")(float)
    assert reg.get("x") is int  # the first registration stays


def test_registry_unknown_name_lists_the_valid_ones_sorted():
    reg: Registry = Registry("fusion")
    for name in ("sum", "concat", "attention"):
        reg.register(name)(dict)
    with pytest.raises(
        KeyError, match="unknown fusion 'mean'; choose one of: attention, concat, sum"
    ):
        reg.get("mean")


def test_registry_names_and_iteration_are_sorted():
    reg: Registry = Registry("thing")
    for name in ("z", "a", "m"):
        reg.register(name)(list)
    assert reg.names() == ["a", "m", "z"]
    assert list(reg) == ["a", "m", "z"]


# --- Field ------------------------------------------------------------------------------------


def test_field_int_rejects_bool_and_float():
    field = Struct({"n": Field(int)})
    assert validate(field, {"n": 3}, file=FILE) == {"n": 3}
    for bad in (True, 2.5, "3"):
        (problem,) = _problems(field, {"n": bad})
        assert problem.field == "n"
        assert problem.message.startswith("expected int, got")


def test_field_float_accepts_int_but_not_bool():
    schema = Struct({"x": Field(float)})
    assert validate(schema, {"x": 2}, file=FILE) == {"x": 2}
    (problem,) = _problems(schema, {"x": False})
    assert problem.message == "expected float, got a boolean False"


@pytest.mark.parametrize(
    ("value", "message"),
    [(-0.5, "-0.5 is below the minimum 0.0"), (1.5, "1.5 is above the maximum 1.0")],
)
def test_field_minimum_and_maximum(value, message):
    schema = Struct({"p": Field(float, minimum=0.0, maximum=1.0)})
    (problem,) = _problems(schema, {"p": value})
    assert problem.message == message
    assert problem.field == "p"


def test_field_bounds_are_inclusive():
    schema = Struct({"p": Field(float, minimum=0.0, maximum=1.0)})
    assert validate(schema, {"p": 0.0}, file=FILE) == {"p": 0.0}
    assert validate(schema, {"p": 1}, file=FILE) == {"p": 1}


def test_field_choices_suggest_the_closest():
    schema = Struct({"precision": Field(str, choices=("auto", "fp32", "bf16"))})
    (problem,) = _problems(schema, {"precision": "fp23"})
    assert problem.message == "'fp23' is not one of auto, fp32, bf16 (did you mean 'fp32'?)"


def test_field_of_wrong_type_reports_only_the_type_problem():
    schema = Struct({"precision": Field(str, choices=("auto", "fp32"))})
    (problem,) = _problems(schema, {"precision": 32})
    assert problem.message == "expected auto | fp32, got int 32"


def test_field_check_function_reports_its_message():
    schema = Struct({"files": Field(str, check=lambda v: None if "{id}" in v else "needs {id}")})
    assert validate(schema, {"files": "a/{id}.png"}, file=FILE) == {"files": "a/{id}.png"}
    (problem,) = _problems(schema, {"files": "a.png"})
    assert (problem.field, problem.message) == ("files", "needs {id}")


# --- Struct ----------------------------------------------------------------------------------


def test_struct_collects_every_problem_in_one_error():
    schema = Struct({"lr": Field(float), "epochs": Field(int, default=10)})
    with pytest.raises(ConfigError) as info:
        validate(schema, {"lr": "fast", "epohcs": 3, "batch": 2}, file=FILE)
    error = info.value
    assert len(error.problems) == 3
    assert {p.field for p in error.problems} == {"lr", "epohcs", "batch"}
    assert all(p.file == FILE for p in error.problems)
    lines = str(error).splitlines()
    assert lines[0] == "3 problems:"
    assert "  cfg.yaml: epohcs: unknown key; did you mean 'epochs'? valid keys: lr, epochs" in lines
    assert "  cfg.yaml: batch: unknown key; valid keys: lr, epochs" in lines
    assert "  cfg.yaml: lr: expected float, got a string 'fast'" in lines


def test_single_problem_error_reads_as_one_line():
    with pytest.raises(ConfigError) as info:
        validate(Struct({"lr": Field(float)}), {}, file=FILE)
    assert str(info.value) == "cfg.yaml: lr: missing required key"
    assert info.value.field == "lr" and info.value.file == FILE


def test_struct_required_key_given_as_null_must_not_be_empty():
    (problem,) = _problems(Struct({"lr": Field(float)}), {"lr": None})
    assert (problem.field, problem.message) == ("lr", "must not be empty")


def test_struct_fills_plain_and_callable_defaults():
    schema = Struct({"a": Field(int, default=3), "tags": ListOf(Field(str), default=list)})
    first = validate(schema, {}, file=FILE)
    second = validate(schema, {"a": None}, file=FILE)
    assert first == {"a": 3, "tags": []} == second
    assert first["tags"] is not second["tags"]  # a fresh list each time


def test_validate_treats_an_empty_file_as_an_empty_mapping():
    assert validate(Struct({"a": Field(int, default=1)}), None, file=FILE) == {"a": 1}


def test_struct_rejects_a_non_mapping():
    (problem,) = _problems(Struct({"x": Struct({"a": Field(int)})}), {"x": [1, 2]})
    assert (problem.field, problem.message) == ("x", "expected a mapping, got a list")


def test_fill_default_fills_a_section_with_its_defaults():
    schema = Struct(
        {
            "train": Struct(
                {"lr": Field(float, default=0.01), "epochs": Field(int, default=5)}, default=FILL
            )
        }
    )
    assert validate(schema, {}, file=FILE) == {"train": {"lr": 0.01, "epochs": 5}}
    assert validate(schema, {"train": None}, file=FILE) == {"train": {"lr": 0.01, "epochs": 5}}
    assert validate(schema, {"train": {"lr": 0.5}}, file=FILE) == {
        "train": {"lr": 0.5, "epochs": 5}
    }


def test_fill_section_with_required_key_reports_it_when_omitted():
    schema = Struct({"train": Struct({"lr": Field(float)}, default=FILL)})
    (problem,) = _problems(schema, {})
    assert (problem.field, problem.message) == ("train.lr", "missing required key")


def test_nested_problems_have_dotted_paths():
    schema = Struct({"model": Struct({"heads": MapOf(Struct({"depth": Field(int, minimum=1)}))})})
    (problem,) = _problems(schema, {"model": {"heads": {"seg": {"depth": 0}}}})
    assert problem.field == "model.heads.seg.depth"
    assert problem.message == "0 is below the minimum 1"


def test_extra_keys_are_validated_by_the_extra_schema():
    schema = Struct(
        {"default_weight": Field(float, default=1.0)},
        extra=Struct({"weight": Field(float, minimum=0.0), "gamma": Field(float, default=2.0)}),
    )
    out = validate(schema, {"seg": {"weight": 0.5}, "edges": {"weight": 2}}, file=FILE)
    assert out == {
        "seg": {"weight": 0.5, "gamma": 2.0},
        "edges": {"weight": 2, "gamma": 2.0},
        "default_weight": 1.0,
    }
    problems = _problems(schema, {"seg": {"weight": -1}, "edges": {"wieght": 1}})
    assert {(p.field, p.message.split(";")[0]) for p in problems} == {
        ("seg.weight", "-1 is below the minimum 0.0"),
        ("edges.wieght", "unknown key"),
        ("edges.weight", "missing required key"),
    }


# --- MapOf, ListOf, OneOf ------------------------------------------------------------------------


def test_mapof_min_items_and_string_keys():
    schema = Struct({"tasks": MapOf(Field(int), min_items=1)})
    assert validate(schema, {"tasks": {1: 2}}, file=FILE) == {"tasks": {"1": 2}}
    (problem,) = _problems(schema, {"tasks": {}})
    assert (problem.field, problem.message) == ("tasks", "needs at least 1 entries")


def test_listof_reports_item_index():
    schema = Struct({"classes": ListOf(Field(str), min_items=2)})
    problems = _problems(schema, {"classes": ["bg", 3]})
    assert [(p.field, p.message) for p in problems] == [("classes[1]", "expected str, got int 3")]
    (short,) = _problems(schema, {"classes": ["bg"]})
    assert short.message == "needs at least 2 items"
    (not_list,) = _problems(schema, {"classes": "bg"})
    assert not_list.message == "expected a list, got a string 'bg'"


def _loss_term() -> OneOf:
    return OneOf(
        [
            Field(float, minimum=0.0),
            Struct(
                {
                    "weight": Field(float, default=1.0, minimum=0.0),
                    "gamma": Field(float, default=2.0),
                }
            ),
        ]
    )


def test_oneof_dispatches_a_float():
    assert validate(Struct({"focal": _loss_term()}), {"focal": 0.5}, file=FILE) == {"focal": 0.5}
    (problem,) = _problems(Struct({"focal": _loss_term()}), {"focal": -1.0})
    assert (problem.field, problem.message) == ("focal", "-1.0 is below the minimum 0.0")


def test_oneof_dispatches_a_mapping_and_fills_its_defaults():
    out = validate(Struct({"focal": _loss_term()}), {"focal": {"gamma": 1.0}}, file=FILE)
    assert out == {"focal": {"weight": 1.0, "gamma": 1.0}}
    (problem,) = _problems(Struct({"focal": _loss_term()}), {"focal": {"gama": 1.0}})
    assert problem.field == "focal.gama"
    assert "did you mean 'gamma'?" in problem.message


def test_oneof_with_no_matching_shape_names_the_alternatives():
    (problem,) = _problems(Struct({"focal": _loss_term()}), {"focal": "strong"})
    assert problem.field == "focal"
    assert problem.message == "expected float or mapping, got a string 'strong'"


# --- doc rows -------------------------------------------------------------------------------


def test_doc_rows_list_every_key_with_its_default():
    schema = Struct(
        {
            "lr": Field(float, doc="learning rate"),
            "train": Struct({"epochs": Field(int, default=5)}, default=FILL),
        }
    )
    rows = {r.key: r for r in doc_rows(schema)}
    assert set(rows) == {"lr", "train", "train.epochs"}
    assert (rows["lr"].default, rows["lr"].type, rows["lr"].doc) == (
        "required",
        "float",
        "learning rate",
    )
    assert rows["train"].default == "(section)"
    assert rows["train.epochs"].default == "5"
