"""The checks. Each module registers its check (`@register`); importing them here fills the registry in
this order, which is also the order of independent checks in a run and in the report."""

from __future__ import annotations

from . import clean, adversarial, corruption, shift, subgroups, shortcuts, label_issues, training, multilabel  # noqa: F401  (each registers its check)
from .base import Check, CheckResult
from .registry import available, register, registry, run_order

__all__ = ["Check", "CheckResult", "available", "register", "registry", "run_order"]
