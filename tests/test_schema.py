"""The published summary schema is generated from typed structures (cnnaudit/schema.py): the shipped file is
what the generator makes of today's types, the golden demo summary matches it, the generator turns each kind of
annotation into the JSON Schema it should, and a summary that breaks the contract is rejected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import jsonschema
import pytest

import cnnaudit
from cnnaudit.schema import (CI, SCHEMA_FILE, Constraint, Count, Doc, Named, NotRequired, Required, Share, closed,
                             dumps, generate, json_schema, main, section_schema, summary_schema, validate)

GOLDEN = Path(__file__).parent / "data" / "demo_summary.json"


def test_the_shipped_schema_is_the_generated_one():
    stale = "cnnaudit/summary.schema.json is stale: run `python -m cnnaudit.schema --write` (and commit it)"
    generated = generate()
    assert summary_schema() == generated, stale
    assert SCHEMA_FILE.read_text(encoding="utf-8") == dumps(generated), stale
    jsonschema.Draft202012Validator.check_schema(generated)
    # the command line generates the same (run as __main__, the module must use the markers the types use)
    check = subprocess.run([sys.executable, "-m", "cnnaudit.schema", "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_generated_schema_covers_every_built_in_check_and_no_plugin():
    from cnnaudit.schema import builtin_checks
    schema = generate()
    assert schema["$defs"]["finding"]["additionalProperties"] is False
    assert "clean" in schema["required"]
    for name, check in builtin_checks().items():
        assert name in schema["properties"], name
        if name != "clean" and getattr(check, "section", None) is not None:  # clean never fails: no failed form
            assert {"$ref": "#/$defs/failed"} in schema["properties"][name]["oneOf"], name
    from cnnaudit.checks import registry
    from cnnaudit.sections import Summary
    check_keys = set(schema["properties"]) - set(Summary.__annotations__)
    assert check_keys == {n for n, c in registry().items() if c.__module__.startswith("cnnaudit.")} - {"clean"}


def golden_summary() -> dict:
    """The golden demo summary with the keys test_demo_golden leaves out of it (they depend on the machine)
    put back, as a real summary has them."""
    s = json.loads(GOLDEN.read_text())
    s = {"version": cnnaudit.__version__, **s, "timing": {"load": 0.5, "total": 60.0, "processes": 1}}
    s["model"] = {"path": "/cache/demo/model.pt", "sha256": "0" * 64, **s["model"]}
    s["data"] = {"path": "/cache/demo/data", **s["data"]}
    return s


def test_the_golden_demo_summary_is_valid():
    summary = golden_summary()
    validate(summary)  # the shipped schema
    jsonschema.validate(summary, generate(), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("break_it", [
    lambda s: s.pop("complete"),
    lambda s: s["clean"].pop("accuracy"),
    lambda s: s.update(seed="0"),
    lambda s: s["model"].update(num_classes=0),
    lambda s: s["clean"].update(accuracy=1.5),
    lambda s: s["findings"][0].update(extra="a finding has exactly its keys"),
    lambda s: s["findings"][0].update(severity="fatal"),
    lambda s: s["findings"][0].update(evidence="clean"),
    lambda s: s.update(shortcuts={"failed": True}),  # a failed section says why
    lambda s: s["adversarial"]["results"][0].update(norm="l1"),
], ids=["missing-complete", "missing-clean-accuracy", "seed-string", "no-classes", "accuracy-above-1",
        "finding-extra-key", "bad-severity", "evidence-not-anchor", "failed-without-error", "unknown-norm"])
def test_a_summary_that_breaks_the_contract_is_rejected(break_it):
    summary = golden_summary()
    break_it(summary)
    with pytest.raises(jsonschema.ValidationError):
        validate(summary)  # the shipped schema, which the first test pins to the generated one


def test_a_failed_section_and_unlisted_keys_are_accepted():
    summary = golden_summary()
    summary["corruption"] = {"failed": True, "error": "RuntimeError: out of memory"}
    summary["something_new"] = {"any": "value"}
    summary["clean"]["new_metric"] = 0.5
    validate(summary)


# ---- the generator on hand-made types (under `from __future__ import annotations`, as in the check modules) --

class Point(TypedDict):
    """A nested type: a $ref to its definition."""
    x: int
    y: float


@closed
class Sample(TypedDict):
    name: Annotated[str, Doc("what it is called"), Constraint(minLength=1)]
    size: Count
    score: float | None
    tags: list[str]
    counts: dict[str, int]
    extra: dict[str, Any]
    kind: Literal["a", "b"]
    flag: Literal[True]
    pair: tuple[int, str]
    many: tuple[float, ...]
    anything: Any
    where: Point
    maybe: Annotated[Point | None, Doc("a point, or null")]
    either: int | str | None
    share: Share
    interval: CI
    note: NotRequired[Annotated[str, Doc("optional, described")]]


@Doc("a described type with optional keys")
class Partial(TypedDict, total=False):
    a: int
    b: Required[str]


class Renamed(TypedDict):
    __schema_name__ = "custom_name"
    v: bool


POINT = {"type": "object", "required": ["x", "y"], "properties": {"x": {"type": "integer"}, "y": {"type": "number"}}}


def test_json_schema_of_a_typeddict():
    got = json_schema(Sample)
    assert got["$ref"] == "#/$defs/sample"
    sample = got["$defs"]["sample"]
    assert list(sample) == ["type", "additionalProperties", "required", "properties"]
    assert sample["additionalProperties"] is False
    assert list(sample["properties"]) == list(Sample.__annotations__)  # declaration order
    assert sample["required"] == [k for k in Sample.__annotations__ if k != "note"]
    assert sample["properties"] == {
        "name": {"type": "string", "description": "what it is called", "minLength": 1},
        "size": {"type": "integer", "minimum": 0},
        "score": {"type": ["number", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "extra": {"type": "object"},
        "kind": {"enum": ["a", "b"]},
        "flag": {"const": True},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2,
                 "maxItems": 2},
        "many": {"type": "array", "items": {"type": "number"}},
        "anything": {},
        "where": {"$ref": "#/$defs/point"},
        "maybe": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "null"}], "description": "a point, or null"},
        "either": {"type": ["integer", "string", "null"]},
        "share": {"$ref": "#/$defs/share"},
        "interval": {"$ref": "#/$defs/ci"},
        "note": {"type": "string", "description": "optional, described"},
    }
    assert got["$defs"]["point"] == POINT
    assert got["$defs"]["share"] == {"type": ["number", "null"], "minimum": 0, "maximum": 1}
    assert got["$defs"]["ci"] == {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2,
                                  "maxItems": 2}
    assert list(got["$defs"]) == ["sample", "point", "share", "ci"]  # first use first: deterministic
    validator = jsonschema.Draft202012Validator(got)
    ok = {"name": "n", "size": 0, "score": None, "tags": [], "counts": {"a": 1}, "extra": {}, "kind": "a",
          "flag": True, "pair": [1, "x"], "many": [0.5], "anything": [1], "where": {"x": 1, "y": 2.0},
          "maybe": None, "either": "s", "share": 0.5, "interval": [0.1, 0.9]}
    assert validator.is_valid(ok)
    assert validator.is_valid({**ok, "note": "here"})
    assert not validator.is_valid({**ok, "unknown": 1})  # closed
    assert not validator.is_valid({**ok, "kind": "c"})
    assert not validator.is_valid({k: v for k, v in ok.items() if k != "where"})
    assert not validator.is_valid({**ok, "interval": [0.1]})


def test_json_schema_of_plain_annotations():
    assert json_schema(int) == {"type": "integer"}
    assert json_schema(bool) == {"type": "boolean"}
    assert json_schema(None) == {"type": "null"}
    assert json_schema(object) == {}
    assert json_schema(Any | None) == {}
    assert json_schema(list) == {"type": "array"}
    assert json_schema(dict) == {"type": "object"}
    assert json_schema(list[int] | None) == {"type": ["array", "null"], "items": {"type": "integer"}}
    assert json_schema(list[int] | list[str]) == {"anyOf": [{"type": "array", "items": {"type": "integer"}},
                                                            {"type": "array", "items": {"type": "string"}}]}
    assert json_schema(Literal["x"] | None) == {"anyOf": [{"const": "x"}, {"type": "null"}]}
    assert json_schema(Annotated[int, Named("small"), Constraint(maximum=3)]) == {
        "$ref": "#/$defs/small", "maximum": 3, "$defs": {"small": {"type": "integer"}}}
    with pytest.raises(TypeError, match="keys are strings"):
        json_schema(dict[int, str])
    with pytest.raises(TypeError, match="no JSON Schema"):
        json_schema(set[int])


def test_optional_keys_class_docs_and_names():
    got = json_schema(Partial)
    assert got["$defs"]["partial"] == {"type": "object", "description": "a described type with optional keys",
                                       "required": ["b"], "properties": {"a": {"type": "integer"},
                                                                         "b": {"type": "string"}}}
    assert json_schema(Renamed) == {"$ref": "#/$defs/custom_name", "$defs": {"custom_name": {
        "type": "object", "required": ["v"], "properties": {"v": {"type": "boolean"}}}}}


def test_a_section_on_its_own_and_a_check_registered_at_run_time():
    schema = section_schema(Point)
    assert schema == {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/point",
                      "$defs": {"point": POINT}}
    assert jsonschema.Draft202012Validator(schema).is_valid({"x": 1, "y": 0.5})
    assert not jsonschema.Draft202012Validator(schema).is_valid({"x": 1})

    from cnnaudit.checks import Check, register, registry

    class PointCheck(Check):
        name, title, template = "points", "Points", "points.html.j2"
        section = Point

        def run(self, ctx, inputs):
            raise NotImplementedError
    register(PointCheck)
    try:
        assert "points" not in generate()["properties"]  # the shipped schema: built-in checks only
        schema = generate(plugins=True)
        assert list(schema["properties"])[-1] == "points"
        assert schema["properties"]["points"] == {"oneOf": [{"$ref": "#/$defs/failed"}, {"$ref": "#/$defs/point"}]}
        assert schema["$defs"]["point"] == POINT
    finally:
        registry().pop("points")


def test_two_types_of_one_name_are_an_error():
    def make():
        class Point(TypedDict):
            z: int
        return Point

    both = TypedDict("Both", {"a": Point, "b": make()})  # b: a different class also named Point
    with pytest.raises(TypeError, match="two types are named 'point'"):
        json_schema(both)


def test_the_command_line(capsys):
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == summary_schema()
    assert main(["--bogus"]) == 2


def test_generation_is_deterministic():
    """The same bytes in another process with another hash seed (no order comes from a set)."""
    code = "import sys; from cnnaudit.schema import dumps, generate; sys.stdout.write(dumps(generate()))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout == dumps(generate())
