"""The registry of checks. A check registers itself where it is defined (`@register`); third-party checks
register through the entry-point group `cnnaudit.checks` (an entry point naming the check class), loaded
the first time the registry is read. The pipeline, the CLI, the gate and the report loop over it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..errors import AuditError, first_line
from .base import Check

ENTRY_POINT_GROUP = "cnnaudit.checks"
_REGISTRY: dict[str, type[Check]] = {}
_plugins = {"loaded": False, "errors": []}


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: make the check available under its name."""
    if not (isinstance(cls, type) and issubclass(cls, Check)) or cls.run is Check.run:
        raise TypeError(f"@register needs a Check subclass with a run() method, not {cls!r}")
    other = _REGISTRY.get(cls.name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"two checks are named {cls.name!r}: {other.__module__}.{other.__qualname__} and "
                        f"{cls.__module__}.{cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Check]]:
    """Every registered check by name, built-in ones first; loads entry-point plugins once."""
    if not _plugins["loaded"]:
        _plugins["loaded"] = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if obj not in _REGISTRY.values():
                    register(obj)
            except Exception as exc:  # a broken plugin must not take the built-in checks down with it
                _plugins["errors"].append(f"check plugin {ep.name!r} ({ep.value}) could not be loaded: "
                                          f"{first_line(exc)}")
    return _REGISTRY


def plugin_errors() -> list[str]:
    registry()
    return list(_plugins["errors"])


def available() -> list[str]:
    """The checks --checks can name (clean always runs)."""
    return [name for name in registry() if name != "clean"]


def outcome_checks() -> list[str]:
    """The checks that declare per-image outcomes (Check.outcomes), clean first, in registry order."""
    return [name for name, check in registry().items() if check.outcomes]


def reads_after(check: type[Check]) -> tuple[str, ...]:
    """The checks whose results `check` reads when they ran: its `after`, and with `reads_outcomes` every
    check that declares outcomes (but reads none itself, which would be a cycle)."""
    if not check.reads_outcomes:
        return check.after
    reg = registry()
    later = _depends_on(check.name, reg)  # checks that read this one (directly or not) must come after it
    return tuple(dict.fromkeys([*check.after, *(n for n in outcome_checks() if n != check.name and n not in later
                                                 and n not in check.requires and not reg[n].reads_outcomes)]))


def _depends_on(name: str, reg: dict) -> set[str]:
    """The checks whose `requires` or `after` reach check `name`, directly or through others."""
    found, grew = set(), True
    while grew:
        grew = False
        for other, cls in reg.items():
            if other not in found and any(d == name or d in found for d in (*cls.requires, *cls.after)):
                found.add(other)
                grew = True
    return found


def run_order(names, key=None) -> list[str]:
    """The checks to run for the requested names: clean, what they require (added), then an order in which
    every check runs after its `requires` and after those of its `after` that run; ties in registry order, or
    by `key(name)` (smallest first) when given (--budget: the dearest planned check as late as it can run)."""
    reg = registry()
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise AuditError(f"--checks names {unknown[0]!r}, which is not a check; choose from "
                         f"{', '.join(available()) or '(none yet)'}.")
    todo, wanted = ["clean", *names], set()
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        if name not in reg:
            raise AuditError(f"check {todo and todo[-1] or name!r} requires check {name!r}, which is not installed.")
        wanted.add(name)
        todo.extend(reg[name].requires)
    order, placed = [], set()
    while len(order) < len(wanted):
        ready = [n for n in reg if n in wanted and n not in placed
                 and all(d in placed for d in reg[n].requires)
                 and all(d in placed or d not in wanted for d in reads_after(reg[n]))]
        if not ready:
            stuck = sorted(wanted - placed)
            raise AuditError(f"checks {', '.join(stuck)} require each other in a cycle; fix their `requires`/`after`.")
        first = min(ready, key=key) if key is not None else ready[0]  # min is stable: registry order breaks ties
        order.append(first)
        placed.add(first)
    return order
