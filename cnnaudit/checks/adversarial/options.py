"""The adversarial check's options: norms and eps grid, attack strength and cascade, backend."""

from __future__ import annotations

from dataclasses import dataclass

from ...attacks import ATTACKS, BACKENDS, AttackSpec
from ...attacks.escalate import Round
from ...budgets import parse_budget
from ...options import option

DEFAULT_EPS = {"linf": [1 / 255, 2 / 255, 4 / 255, 8 / 255], "l2": [0.25, 0.5, 1.0]}
# thorough has AutoAttack's attacks (Croce & Hein 2020) but FAB, at its budgets or more, in cnnaudit's torch
# versions (scale-invariant losses, per-sample seeding); ART's AutoAttack stays available by name.
CASCADES = {
    "fast": ["fgsm", "pgd", "apgd_dlr", "apgd_t"],
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
# Margin-guided escalation after the standard cascade (attacks/escalate.py): a survivor whose scale-free margin
# is below a round's threshold gets that round's attack. Thresholds and attacks: benchmarks/bench_autoattack.py
# on adversarially trained models, where the samples AutoAttack breaks and the cascade does not are the
# low-margin ones.
ESCALATION = {
    "standard": (
        Round(AttackSpec("apgd_t_near", "apgd_t", "dlr_t", steps=50, step_size=2.0, restarts=3, rank_at="start"), 0.15),
        Round(AttackSpec("apgd_dlr_odi", "apgd", "dlr", steps=100, step_size=2.0, start="odi"), 0.1),
        Round(AttackSpec("square_near", "square", "margin", steps=1000), 0.02),
    ),
}
# a survivor whose margin is under this (in units of its clean logits' standard deviation) after the last
# attack is "near the boundary": the one a stronger attack would most likely break
NEAR_MARGIN = 0.05

STRENGTH_HELP = ("standard: FGSM, PGD-10, APGD-DLR-20, APGD-T-20 on 3 targets, then more attack on the survivors "
                 "closest to the boundary (APGD-T-100 on the classes closest at their best point, APGD-DLR-100 from "
                 "an output-diversified start, Square with 5,000 queries on the hardest few); fast: the cascade "
                 "without escalation; thorough: PGD-50 and APGD-100 with 3 restarts, APGD-CE, APGD-T-100 on 9 "
                 "targets and Square with 5,000 queries on every survivor (Square also runs when a gradient-masking "
                 "sanity check fails)")


@dataclass
class AdversarialOptions:
    """The adversarial check's options (each field's help is its documentation and its flag's)."""
    norms: tuple[str, ...] = option(("linf", "l2"), flag="--norms", many=True, choices=("linf", "l2"),
                                    help="attack norms, comma-separated (default: linf,l2)")
    eps: dict | None = option(None, flag="--eps-{key}", keys=("linf", "l2"), many=True, parse=parse_budget,
                              positive=True, sort=True, metavar="EPS", expects="give a number or fraction like 8/255",
                              help="{key} budgets in [0,1] pixel units, comma-separated; fractions like 8/255 allowed "
                                   "(defaults: linf 1/255,2/255,4/255,8/255; l2 0.25,0.5,1.0)")
    attack_strength: str = option("standard", flag="--attack-strength", choices=tuple(CASCADES), help=STRENGTH_HELP)
    large_eps: dict | None = option(None, keys=("linf", "l2"), parse=parse_budget, positive=True,
                                    expects="give a number or fraction like 8/255",
                                    help="the budget per norm at which robust accuracy should reach about 0% "
                                         "(a sanity check)")
    attacks: tuple[str, ...] | None = option(None, flag="--attacks", many=True, choices=(*ATTACKS, *THOROUGH),
                                             help="the attack cascade, cheapest first, comma-separated "
                                                  "(default: set by --attack-strength; autoattack is ART's)")
    backend: str = option("torch", flag="--attack-backend", choices=tuple(BACKENDS),
                          help="torch: cnnaudit's FGSM/PGD/APGD/Square (per-sample early stopping, stays on the "
                               "device); art: ART's implementations, as a reference (slower)")

    def cascade(self) -> list[AttackSpec]:
        names = list(self.attacks) if self.attacks else CASCADES[self.attack_strength]
        if names[0] != "fgsm":  # FGSM alone is always measured: the cascade's first stage and a sanity curve
            names = ["fgsm", *[n for n in names if n != "fgsm"]]
        return [spec(n) for n in names]

    def escalation(self) -> tuple[Round, ...]:
        """The escalation rounds after the cascade: none when the cascade is given by name (--attacks) or ART
        runs the attacks (a reference implementation, as it is)."""
        return () if self.attacks or self.backend == "art" else ESCALATION.get(self.attack_strength, ())

    def grid(self) -> dict[str, list[float]]:
        """{norm: sorted budgets}: the defaults, or the given ones (numbers or fractions like "8/255")."""
        eps = self.eps or DEFAULT_EPS
        norms = tuple(dict.fromkeys([*self.norms, *(self.eps or {})]))  # a norm given budgets is attacked
        return {n: sorted(set(parse_budget(e) for e in eps.get(n, DEFAULT_EPS[n]))) for n in norms}


def spec(name: str) -> AttackSpec:
    return THOROUGH.get(name) or ATTACKS[name]
