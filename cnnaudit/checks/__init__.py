"""The registry of checks. `clean` always runs first; the others run when named by --checks."""

from __future__ import annotations

from .base import Check, CheckResult
from .adversarial import AdversarialCheck
from .clean import CleanCheck
from .corruption import CorruptionCheck
from .shortcuts import ShortcutCheck
from .subgroups import SubgroupCheck

REGISTRY: dict[str, type[Check]] = {
    CleanCheck.name: CleanCheck,
    AdversarialCheck.name: AdversarialCheck,
    CorruptionCheck.name: CorruptionCheck,
    SubgroupCheck.name: SubgroupCheck,
    ShortcutCheck.name: ShortcutCheck,
}


def available() -> list[str]:
    return [name for name in REGISTRY if name != "clean"]


__all__ = ["Check", "CheckResult", "REGISTRY", "available"]
