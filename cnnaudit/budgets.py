"""Attack budgets as people write them: numbers or fractions like 8/255, and back (CLI, gate and report)."""

from __future__ import annotations


def eps_label(norm: str, eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 and k <= 32 else f"{eps:.4g}"


def parse_budget(text) -> float:
    """A budget written as a number or a fraction like 8/255 (the inverse of eps_label); ValueError if not."""
    num, _, den = str(text).strip().partition("/")
    return float(num) / (float(den) if den else 1.0)
