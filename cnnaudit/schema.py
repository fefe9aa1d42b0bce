"""The JSON Schema of summary.json (cnnaudit/summary.schema.json, shipped in the package), for CI jobs
that read summaries: `python -m cnnaudit.schema` prints it; `validate(summary)` checks one (it needs the
`jsonschema` package, which cnnaudit does not require at run time).

The shipped file is generated from typed structures, never edited by hand: the top level of summary.json
is `cnnaudit.sections.Summary` (a TypedDict), and each built-in check declares the TypedDict of its section
as the class attribute `section` of its Check class. `generate()` builds the schema from them and
`python -m cnnaudit.schema --write` rewrites the shipped file (`--check` exits 1 while it is stale, and so
does tests/test_schema.py).

How annotations become JSON Schema (`json_schema`):

- int, float, str, bool, None: integer, number, string, boolean, null; Any and object: {} (anything);
- `X | Y` (and Optional): {"type": [...]} where every part is a plain type, else anyOf;
- list[X] and tuple[X, ...]: an array of X; tuple[X, Y]: prefixItems with minItems = maxItems = 2;
- dict[str, X]: an object whose values are X; Literal[a]: const; Literal[a, b]: enum;
- a TypedDict: {"$ref": "#/$defs/<name>"} (its class name in snake_case, or its `__schema_name__`), defined
  once with its keys in declaration order and `required` = the keys not marked NotRequired (or total=False).
  Keys not declared may appear (the contract lists what may be relied on) unless the class is `@closed`.
- `Annotated[X, ...]` adds what its markers say: `Doc("text")` a description, `Constraint(minimum=0)` any
  JSON Schema keywords, `Named("name")` makes the type a reusable definition under $defs (as `Share`, `CI`).
  `@Doc("text")` on a TypedDict describes the type itself (its definition under $defs).
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, Union

try:  # typing has them from 3.11; on 3.10 typing_extensions (a dependency of torch) provides them
    from typing import NotRequired, Required
except ImportError:  # pragma: no cover
    from typing_extensions import NotRequired, Required

SCHEMA_FILE = Path(__file__).with_name("summary.schema.json")
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://cnnaudit.dev/schema/summary-0.9.json"
TITLE = "cnnaudit summary.json"
DESCRIPTION = ("What CI integrators may rely on. Sections of checks that ran are objects (a failed check's is "
               "{failed: true, error}); keys not listed here may appear and are not part of the contract.")


def summary_schema() -> dict:
    return json.loads(files("cnnaudit").joinpath("summary.schema.json").read_text(encoding="utf-8"))


def validate(summary: dict) -> None:
    """Raise jsonschema.ValidationError when `summary` does not match the published schema."""
    import jsonschema
    jsonschema.validate(summary, summary_schema(), cls=jsonschema.Draft202012Validator)


# ---- markers for Annotated[...] ---------------------------------------------------------------------------

class Doc:
    """A description: `Annotated[int, Doc("images skipped")]` on a key, or `@Doc("...")` on a TypedDict."""
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __call__(self, cls):
        cls.__schema_doc__ = self.text
        return cls

    def __repr__(self) -> str:
        return f"Doc({self.text!r})"


class Constraint:
    """JSON Schema keywords for the annotated type: `Annotated[int, Constraint(minimum=0)]`."""
    __slots__ = ("keywords",)

    def __init__(self, **keywords):
        self.keywords = keywords

    def __repr__(self) -> str:
        return f"Constraint({', '.join(f'{k}={v!r}' for k, v in self.keywords.items())})"


class Named:
    """Makes the annotated type (with the markers before this one) a definition under $defs, referenced by
    name wherever it is used: `Share = Annotated[float | None, Constraint(...), Named("share")]`."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Named({self.name!r})"


CLOSED: set[type] = set()  # TypedDicts whose objects have no keys besides the declared ones


def closed(cls):
    """Class decorator: the TypedDict's objects have exactly its keys (additionalProperties: false)."""
    CLOSED.add(cls)
    return cls


# the vocabulary every section shares
Share = Annotated[float | None, Constraint(minimum=0, maximum=1), Named("share")]  # a proportion; null when n is 0
CI = Annotated[list[float] | None, Constraint(minItems=2, maxItems=2), Named("ci")]  # a 95% interval [low, high]
Count = Annotated[int, Constraint(minimum=0)]


# ---- annotations to JSON Schema ---------------------------------------------------------------------------

SIMPLE = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null", None: "null"}
# the keywords that apply to one JSON type only: parts of a union that use only these (for different types)
# merge into one {"type": [...]} schema without changing what it accepts
TYPE_KEYWORDS = {
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "string": {"minLength", "maxLength", "pattern", "format"},
    "array": {"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"},
    "object": {"properties", "required", "additionalProperties", "minProperties", "maxProperties"},
    "boolean": set(), "null": set(),
}


def schema_name(cls) -> str:
    """The $defs name of a TypedDict: its `__schema_name__`, else its class name in snake_case."""
    explicit = cls.__dict__.get("__schema_name__")
    if explicit:
        return explicit
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__).lower()


class _Builder:
    """Converts annotations, collecting the definitions they reference in `defs` (first use first)."""

    def __init__(self):
        self.defs: dict[str, dict] = {}
        self.owners: dict[str, object] = {}

    def schema(self, tp) -> dict:
        if tp is Any or tp is object:
            return {}
        if (tp is None or isinstance(tp, type)) and tp in SIMPLE:
            return {"type": SIMPLE[tp]}
        if typing.is_typeddict(tp):
            return self.define(schema_name(tp), tp, lambda: self.typeddict(tp))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Annotated:
            return self.annotated(tp.__origin__, tp.__metadata__)
        if origin in (Required, NotRequired):  # only meaningful on a TypedDict's key (typeddict() reads it)
            return self.schema(args[0])
        if origin is Literal:
            return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        if origin is Union or origin is types.UnionType:
            return self.union(args)
        if tp is list or origin is list or tp is tuple:
            return {"type": "array", **({"items": self.schema(args[0])} if args else {})}
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.schema(args[0])}
            return {"type": "array", "prefixItems": [self.schema(a) for a in args], "minItems": len(args),
                    "maxItems": len(args)}
        if tp is dict or origin is dict:
            if args and args[0] is not str:
                raise TypeError(f"JSON object keys are strings: {tp!r} cannot be written as JSON")
            values = self.schema(args[1]) if args else {}
            return {"type": "object", **({"additionalProperties": values} if values else {})}
        raise TypeError(f"no JSON Schema for the annotation {tp!r}")

    def annotated(self, base, metadata: tuple) -> dict:
        names = [i for i, m in enumerate(metadata) if isinstance(m, Named)]
        if names:  # the markers up to the last Named build its definition; those after apply where it is used
            i = names[-1]
            inner = Annotated[(base, *metadata[:i])] if i else base
            out = self.define(metadata[i].name, inner, lambda: self.schema(inner))
            metadata = metadata[i + 1:]
        else:
            out = self.schema(base)
        out = dict(out)
        for m in metadata:
            if isinstance(m, Constraint):
                out.update(m.keywords)
            elif isinstance(m, Doc):
                out["description"] = m.text
            # any other marker (another library's) says nothing to JSON Schema
        return out

    def union(self, args) -> dict:
        parts: list[dict] = []
        for a in args:
            s = self.schema(a)
            for p in (s["anyOf"] if list(s) == ["anyOf"] else [s]):  # (X | Y) | Z: one flat union
                if p not in parts:
                    parts.append(p)
        if {} in parts:  # Any | X accepts anything
            return {}
        if len(parts) == 1:
            return parts[0]
        merged: dict = {"type": []}
        for p in parts:
            t, keywords = p.get("type"), set(p) - {"type"}
            if not isinstance(t, str) or t in merged["type"] or not keywords <= TYPE_KEYWORDS[t] \
                    or keywords & set(merged):
                return {"anyOf": parts}
            merged["type"].append(t)
            merged.update({k: p[k] for k in p if k != "type"})
        return merged

    def define(self, name: str, owner, build) -> dict:
        if name in self.owners:
            if self.owners[name] != owner:
                raise TypeError(f"two types are named {name!r} in the schema: {self.owners[name]!r} and {owner!r}; "
                                "rename one (or give it a __schema_name__)")
        else:
            self.owners[name] = owner
            self.defs[name] = {}  # a place first: a type may refer to itself
            self.defs[name] = build()
        return {"$ref": f"#/$defs/{name}"}

    def typeddict(self, cls) -> dict:
        hints = typing.get_type_hints(cls, include_extras=True)
        out: dict = {"type": "object"}
        if getattr(cls, "__schema_doc__", None):
            out["description"] = cls.__schema_doc__
        if cls in CLOSED:
            out["additionalProperties"] = False
        required, properties = [], {}
        for key in cls.__annotations__:  # declaration order, a base class's keys first
            tp, qualifier = _qualified(hints[key])
            # __required_keys__ is wrong on 3.10 and 3.11 for NotRequired/Required under `from __future__
            # import annotations` (a string annotation hides them): the qualifier wins where there is one
            if qualifier is Required or (qualifier is None and key in cls.__required_keys__):
                required.append(key)
            properties[key] = self.schema(tp)
        if required:
            out["required"] = required
        if properties:
            out["properties"] = properties
        return out


def _qualified(tp):
    """(the annotation without Required/NotRequired, that qualifier or None), also inside Annotated."""
    origin = typing.get_origin(tp)
    if origin in (Required, NotRequired):
        return typing.get_args(tp)[0], origin
    if origin is Annotated:
        inner, qualifier = _qualified(tp.__origin__)
        if qualifier is not None:
            return Annotated[(inner, *tp.__metadata__)], qualifier
    return tp, None


def json_schema(tp) -> dict:
    """The JSON Schema of an annotation. A TypedDict (or Named type) is a $ref, and the definitions it
    needs come along under "$defs", so the result is a schema on its own."""
    b = _Builder()
    out = b.schema(tp)
    return {**out, "$defs": b.defs} if b.defs else out


def section_schema(section) -> dict:
    """The JSON Schema of one check's section type (a TypedDict) on its own, its definitions included: what
    cnnaudit.testing checks a check's section against, a plugin's too."""
    return {"$schema": DRAFT, **json_schema(section)}


def builtin_checks() -> dict:
    """The registered checks defined inside the cnnaudit package (not plugins), by name, in registry order."""
    from .checks import registry
    return {name: cls for name, cls in registry().items()
            if cls.__module__ == "cnnaudit" or cls.__module__.startswith("cnnaudit.")}


def generate(plugins: bool = False) -> dict:
    """The whole summary schema: `cnnaudit.sections.Summary` at the top, and a key per built-in check holding
    its `section` (a TypedDict), or the failed form {failed: true, error} instead. A check whose key Summary
    requires (clean: the audit stops when it fails) has no failed form; a check without a `section`
    attribute is {"type": "object"}. The shipped file has the built-in checks only; `plugins=True` adds
    every other registered check (entry-point plugins, checks registered at run time) after them."""
    from .checks import registry
    from .sections import Failed, Summary
    b = _Builder()
    top = b.typeddict(Summary)
    properties, required = top.setdefault("properties", {}), top.get("required", [])
    checks = builtin_checks()
    if plugins:
        checks.update(registry())  # the others after the built-in ones
    for name, check in checks.items():
        section = getattr(check, "section", None)
        if section is None:
            properties[name] = {"type": "object"}
        elif name in required:
            properties[name] = b.schema(section)
        else:
            properties[name] = {"oneOf": [b.schema(Failed), b.schema(section)]}
    return {"$schema": DRAFT, "$id": SCHEMA_ID, "title": TITLE, "description": DESCRIPTION, **top,
            "$defs": b.defs}


def dumps(schema: dict) -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        SCHEMA_FILE.write_text(dumps(generate()), encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
        return 0
    if argv == ["--check"]:
        if SCHEMA_FILE.read_text(encoding="utf-8") != dumps(generate()):
            print(f"{SCHEMA_FILE} is stale: run `python -m cnnaudit.schema --write`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m cnnaudit.schema [--write | --check]\n  prints the shipped summary schema; --write "
              "regenerates it (cnnaudit/summary.schema.json) from the typed sections; --check exits 1 when it is "
              "stale", file=sys.stderr)
        return 2
    print(json.dumps(summary_schema(), indent=2))
    return 0


if __name__ == "__main__":
    # run as a script this file is the module __main__, whose Doc, Constraint and CLOSED are not the ones the
    # typed sections use (they import cnnaudit.schema): run the imported module's main
    from cnnaudit.schema import main as _main
    sys.exit(_main())
