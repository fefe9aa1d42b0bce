"""The adversarial check's options: norms and eps grid, attack strength and cascade, backend."""

from __future__ import annotations

from dataclasses import dataclass

from ...attacks import ATTACKS, BACKENDS, AttackSpec
from ...budgets import parse_budget
from ...errors import AuditError

DEFAULT_EPS = {"linf": [1 / 255, 2 / 255, 4 / 255, 8 / 255], "l2": [0.25, 0.5, 1.0]}
# thorough has AutoAttack's attacks (Croce & Hein 2020) but FAB, at its budgets or more, in cnnaudit's torch
# versions (scale-invariant losses, per-sample seeding); ART's AutoAttack stays available by name.
CASCADES = {
    "standard": ["fgsm", "pgd", "apgd_dlr", "apgd_t"],
    "thorough": ["fgsm", "pgd_thorough", "apgd_dlr_thorough", "apgd_ce_thorough", "apgd_t_thorough",
                 "square_thorough"],
}
THOROUGH = {
    "pgd_thorough": AttackSpec("pgd", "pgd", "ce", steps=50, step_size=0.1, restarts=3),
    "apgd_dlr_thorough": AttackSpec("apgd_dlr", "apgd", "dlr", steps=100, step_size=2.0, restarts=3),
    "apgd_ce_thorough": AttackSpec("apgd_ce", "apgd", "ce", steps=100, step_size=2.0, restarts=3),
    "apgd_t_thorough": AttackSpec("apgd_t", "apgd_t", "dlr_t", steps=100, step_size=2.0, restarts=9),
    "square_thorough": AttackSpec("square", "square", "margin", steps=5000),
}


@dataclass
class AdversarialOptions:
    norms: tuple[str, ...] = ("linf", "l2")
    eps: dict | None = None  # {norm: [eps, ...]}; None: DEFAULT_EPS
    attack_strength: str = "standard"  # standard | thorough
    large_eps: dict | None = None  # the "should reach ~0%" budget for the sanity check
    attacks: list[str] | None = None  # the cascade, cheapest first; None: CASCADES[attack_strength]
    backend: str = "torch"  # torch: cnnaudit's attacks (early stopping, on device); art: ART's, as a reference

    def cascade(self) -> list[AttackSpec]:
        names = list(self.attacks) if self.attacks else CASCADES[self.attack_strength]
        unknown = [n for n in names if n not in ATTACKS and n not in THOROUGH]
        if unknown or not names:
            raise AuditError(f"--attacks has {(unknown or [''])[0]!r}; choose from {', '.join(ATTACKS)}.")
        if names[0] != "fgsm":  # FGSM alone is always measured: the cascade's first stage and a sanity curve
            names = ["fgsm", *[n for n in names if n != "fgsm"]]
        return [spec(n) for n in names]

    def validated(self) -> "AdversarialOptions":
        self.grid()
        self.cascade()
        return self

    def grid(self) -> dict[str, list[float]]:
        eps = self.eps or DEFAULT_EPS
        norms = tuple(dict.fromkeys([*self.norms, *(self.eps or {})]))  # a norm given budgets is attacked
        if self.backend not in BACKENDS:
            raise AuditError(f"--attack-backend {self.backend!r} is not one of {', '.join(BACKENDS)}.")
        if self.attack_strength not in CASCADES:
            raise AuditError(f"attack strength {self.attack_strength!r} is not one of {', '.join(CASCADES)}.")
        try:  # numbers or fractions like "8/255", from the CLI and from Python alike
            return {n: sorted(set(parse_budget(e) for e in eps.get(n, DEFAULT_EPS[n]))) for n in norms}
        except (ValueError, ZeroDivisionError, KeyError) as exc:
            raise AuditError(f"adversarial option eps={eps!r} is not a budget list per norm (linf, l2) of numbers "
                             f"or fractions like 8/255 ({exc}).") from None


def spec(name: str) -> AttackSpec:
    return THOROUGH.get(name) or ATTACKS[name]
