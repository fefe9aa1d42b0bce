"""The attacks cnnaudit knows, as data: name, algorithm, loss, steps, step size (as a fraction of eps), restarts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration. `steps`/`step_size` are ignored by single-step attacks."""
    name: str
    method: str  # fgm | pgd | apgd | apgd_t | square | autoattack
    loss: str  # ce | dlr | dlr_t | margin  (all scale-invariant: see losses.py; square.py for margin)
    steps: int = 1  # for square: the query budget per sample
    step_size: float | None = None  # as a fraction of eps; None: the attack's documented default
    restarts: int = 1  # for apgd_t: the number of target classes, one run each
    start: str = "given"  # given: the caller's start point if any (APGD's first restart); odi: output-diversified
    rank_at: str = "clean"  # apgd_t: rank the target classes on the clean image, or at the start point


# Defaults follow the literature: PGD with 10 steps of 2.5*eps/10 (Madry et al. 2018), APGD with its own
# step-size schedule from 2*eps (Croce & Hein 2020), which needs no tuning; APGD-T against the 3 classes
# that score highest on the clean image (AutoAttack standard: 9 targets of 100 steps); Square with
# 1,000 queries (AutoAttack: 5,000, the thorough setting).
ATTACKS = {
    "fgsm": AttackSpec("fgsm", "fgm", "ce"),
    "pgd": AttackSpec("pgd", "pgd", "ce", steps=10, step_size=0.25),
    "apgd_dlr": AttackSpec("apgd_dlr", "apgd", "dlr", steps=20, step_size=2.0),
    "apgd_ce": AttackSpec("apgd_ce", "apgd", "ce", steps=20, step_size=2.0),
    "apgd_t": AttackSpec("apgd_t", "apgd_t", "dlr_t", steps=20, step_size=2.0, restarts=3),
    "square": AttackSpec("square", "square", "margin", steps=1000),
    "autoattack": AttackSpec("autoattack", "autoattack", "ce"),
}
NORMS = {"linf": np.inf, "l2": 2}


