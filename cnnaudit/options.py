"""Check options, declared once: each field of a check's options dataclass carries its help text, its
command-line flag and its constraint (`option(...)`). One validator checks every check's options and
names the option in its errors; the CLI generates its flags from the same declarations and names the
flag instead. In the spirit of scikit-learn's `_parameter_constraints`: constraints as data, one
machinery, uniform messages.

    @dataclass
    class CorruptionOptions:
        severities: tuple[int, ...] = option((1, 2, 3, 4, 5), flag="--severities", parse=int, many=True,
                                             choices=(1, 2, 3, 4, 5), help="severities 1-5")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .errors import AuditError

UNKNOWN_OPTION = "the {check} check has no option {name!r}; its options: {known}."
NOT_OPTIONS = "audit(..., {check}=...) takes the {check} check's options class or a dict, not {type}."


class OptionError(AuditError):
    """A bad option value. `where` is how the user gave it: "the adversarial option 'norms'" from Python
    (set by `validate`), "--norms" on the command line (set by the CLI)."""

    def __init__(self, option: str, value: Any, reason: str, key: str | None = None, check: str | None = None):
        self.option, self.value, self.reason, self.key, self.check = option, value, reason, key, check
        self.where = f"option {option!r}"
        super().__init__(option, value, reason)

    def __str__(self) -> str:
        return f"{self.where} has {self.value!r}: {self.reason}."


@dataclass(frozen=True)
class Spec:
    help: str
    flag: str | None = None  # "--norms"; for a per-key dict, a template like "--eps-{key}"
    parse: Callable[[Any], Any] | None = None  # one item (text from the CLI, or a Python value) -> value
    many: bool = False  # a sequence; comma-separated on the command line
    keys: tuple[str, ...] = ()  # a dict {key: value (a sequence, with many)}, one flag per key
    choices: tuple = ()  # allowed values (of each item, for many)
    every: str | None = None  # a word that stands for all choices, like "all"
    groups: dict | None = None  # words that stand for several choices, like {"geometric": (...)} (with many)
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    sort: bool = False  # a set of values: deduplicated and sorted
    allow_empty: bool = False  # an empty sequence is a value (the default of an optional list)
    repeat: bool = False  # the flag may be given more than once (and its values add up)
    switch: bool = False  # a yes/no option: a flag without a value turns it on
    metavar: str | None = None
    expects: str = ""  # what a good value looks like, for errors of parse

    def flags(self) -> list[tuple[str, str | None]]:
        """(flag, key) pairs: one flag, or one per key."""
        if self.flag is None:
            return []
        return [(self.flag.format(key=k), k) for k in self.keys] if self.keys else [(self.flag, None)]


def option(default=None, *, default_factory=None, **spec) -> Any:
    """A dataclass field that declares an option (see Spec for the keywords)."""
    meta = {"cnnaudit": Spec(**spec)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def specs(options_type: type) -> dict[str, Spec]:
    return {f.name: f.metadata["cnnaudit"] for f in dataclasses.fields(options_type) if "cnnaudit" in f.metadata}


def as_dict(value) -> dict:
    """An options instance or dict as a dict of the fields given."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return dict(value)


def validate(check: str, options_type: type, given) -> Any:
    """`given` (an options instance or a dict of some of its fields) checked against the declarations and
    normalized (parsed items, `every` expanded, sets sorted), then the class's own `check()` for what
    spans fields; a new instance. Raises OptionError naming the option, or AuditError for an unknown one."""
    if not isinstance(given, dict) and not dataclasses.is_dataclass(given):
        raise AuditError(NOT_OPTIONS.format(check=check, type=type(given).__name__))
    given = as_dict(given)
    known = {f.name for f in dataclasses.fields(options_type)}
    for name in given:
        if name not in known:
            raise AuditError(UNKNOWN_OPTION.format(check=check, name=name, known=", ".join(sorted(known))))
    declared = specs(options_type)
    try:
        values = {name: normalized(name, declared[name], value) if name in declared else value
                  for name, value in given.items()}
        opts = options_type(**values)
        if hasattr(opts, "check"):
            opts.check()
    except OptionError as exc:
        exc.check, exc.where = check, f"the {check} option {exc.option!r}"
        raise
    return opts


def normalized(name: str, spec: Spec, value):
    """One declared value checked and normalized (parsed items, `every` and groups expanded, sets sorted)."""
    if value is None:
        return None
    if spec.keys:
        if not isinstance(value, dict):
            raise OptionError(name, value, f"give a dict with keys {', '.join(spec.keys)}")
        for key in value:
            if key not in spec.keys:
                raise OptionError(name, key, f"keys are {', '.join(spec.keys)}")
        return {key: _many(name, spec, items, key) if spec.many else _item(name, spec, items, key)
                for key, items in value.items()}
    if spec.many:
        return _many(name, spec, value)
    return _item(name, spec, value)


def _many(name: str, spec: Spec, value, key: str | None = None):
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    if spec.every is not None and items == [spec.every]:
        items = list(spec.choices)
    if spec.groups:  # each group word in place of its members, once each
        items = list(dict.fromkeys(m for item in items for m in (spec.groups.get(item, (item,))
                                                                  if isinstance(item, str) else (item,))))
    if not items and not spec.allow_empty:
        raise OptionError(name, value, "give at least one value", key)
    out = [_item(name, spec, item, key) for item in items]
    return tuple(sorted(set(out))) if spec.sort else tuple(out)


def from_text(name: str, spec: Spec, text: str, key: str | None = None):
    """A flag's text as the option's value: comma-separated items for many, each parsed; the other
    constraints are validate's, so Python and the CLI share them."""
    if not spec.many:
        return _parsed(name, spec, text.strip(), key)
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise OptionError(name, text, "give at least one value", key)
    return tuple(_parsed(name, spec, item, key) for item in items)


def _parsed(name: str, spec: Spec, value, key: str | None = None):
    if spec.parse is None:
        return value
    try:
        return spec.parse(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise OptionError(name, value, spec.expects or f"expected {getattr(spec.parse, '__name__', 'a value')}",
                          key) from None


def _item(name: str, spec: Spec, value, key: str | None = None):
    value = _parsed(name, spec, value, key)
    if spec.choices and value not in spec.choices:
        words = ", ".join(map(str, spec.choices)) + (f" or {spec.every!r}" if spec.every else "")
        if spec.groups:
            words += " (or a group: " + ", ".join(spec.groups) + ")"
        raise OptionError(name, value, f"choose from {words}", key)
    if spec.minimum is not None and value < spec.minimum:
        raise OptionError(name, value, f"the smallest allowed is {_number(spec.minimum)}", key)
    if spec.maximum is not None and value > spec.maximum:
        raise OptionError(name, value, f"the largest allowed is {_number(spec.maximum)}", key)
    if spec.positive and not value > 0:
        raise OptionError(name, value, "must be positive", key)
    return value


def _number(v: float) -> str:
    """A bound as a person writes it: 4294967295, not 4.29497e+09."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
