"""Margin-guided escalation: after the cheap cascade, spend more attack where a sample is close to breaking.

Why: on adversarially trained models the loss surface near x is flat and the survivors of a short
cascade sit near the decision boundary; a longer, more diverse attack breaks some of them (AutoAttack
does, at 30-50x the cost of the cascade). Most survivors, though, keep a wide margin under any attack,
and attacking them longer buys nothing. So each survivor's best margin decides what it gets, as in
adaptive auto attack (Liu et al., CVPR 2022: discard the samples an attack is not moving, spend the
budget on the others) and the minimum-margin attack (Gao et al., ICML 2022: targeted margin attacks on
the classes closest at the current point, not at the clean image).

The margin is scale-free: z_y - max_{k!=y} z_k divided by the standard deviation of the sample's clean
logits, so a model and its x10^4 twin get the same margins, the same decisions and the same attacks.

Procedure (`escalate`), per budget, on the samples the cascade left standing:
  round r, for r = 1..len(rounds): the samples whose best margin is below the round's threshold get the
  round's attack, started from their best point where the attack takes a start (APGD), else from its
  own start (output-diversified for the restarts, Tashiro et al. 2020, or Square's stripes). A sample
  leaves the escalation when it breaks, or when a round lowered its margin by less than `stall` of
  its value (the margin stopped falling: further rounds are unlikely to break it). Thresholds shrink
  from round to round, so the most expensive attack (Square, whose cost is one pass per query however
  few samples it has) runs on the hardest few only.
Every attack keeps its per-sample seeding, so a sample's escalation depends only on (seed, sample id,
its own margins): not on its batch, pool or process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .ball import check_bounds
from .specs import AttackSpec
from .square import margin_and_vote


@dataclass(frozen=True)
class Round:
    """One escalation round: the attack, and the margin under which a survivor gets it."""
    attack: AttackSpec
    below: float


def scaled_margin(model, x: torch.Tensor, y: torch.Tensor, spread: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(margin / spread, misclassified) per sample, `width` samples a pass; a randomized model's margin is
    averaged over its draws and misclassified means most draws misclassify (square.margin_and_vote)."""
    margins, wrong = [], []
    for i in range(0, len(x), width):
        m, w, _ = margin_and_vote(model, x[i:i + width], y[i:i + width])
        margins.append(m)
        wrong.append(w)
    if not margins:
        return torch.empty(0, device=x.device), torch.empty(0, dtype=torch.bool, device=x.device)
    return torch.cat(margins) / spread.clamp_min(1e-12), torch.cat(wrong)


def clean_spread(model, x: torch.Tensor, width: int) -> torch.Tensor:
    """Standard deviation of each sample's clean logits: the unit of its margin."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + width]).float().std(dim=1) for i in range(0, len(x), width)])


def escalate(runner, rounds, x: torch.Tensor, y: torch.Tensor, x_best: torch.Tensor, spread: torch.Tensor, *,
             eps: float, norm: str, seed: int, ids, stall: float = 0.05) -> dict:
    """Escalate the attack on standing samples (x, y) whose best points so far are x_best.

    Returns {"x_best": best points (the example where broken), "broken": bool (N,), "found_by": attack
    name per sample ("" if standing), "margin": scale-free margin at x_best (N,), "attacked": how many
    samples each round attacked}."""
    width = runner.batch_size
    ids = np.asarray(ids, dtype=np.int64)
    x_best = x_best.clone()
    m, broken = scaled_margin(runner.model, x_best, y, spread, width)
    found_by = np.array([""] * len(x), dtype=object)
    found_by[broken.cpu().numpy()] = "cascade"  # a randomized model's fresh draws can break a survivor here
    active = ~broken
    attacked = []
    for k, rnd in enumerate(rounds):
        pick = (active & (m < rnd.below)).nonzero()[:, 0]
        attacked.append(int(len(pick)))
        if not len(pick):
            continue
        adv = check_bounds(runner.run(rnd.attack, x[pick], y[pick], eps=eps, norm=norm, seed=seed + 100 + k,
                                      ids=ids[pick.cpu().numpy()], start=x_best[pick]), x[pick], eps, norm)
        m_new, hit = scaled_margin(runner.model, adv, y[pick], spread[pick], width)
        better = hit | (m_new < m[pick])
        x_best[pick[better]] = adv[better]
        # the margin stopped falling: this sample leaves the escalation
        stalled = ~hit & (m_new > m[pick] - stall * m[pick].abs())
        m[pick] = torch.where(better, m_new, m[pick])
        broken[pick[hit]] = True
        found_by[pick[hit].cpu().numpy()] = rnd.attack.name
        active[pick[hit | stalled]] = False
    return {"x_best": x_best, "broken": broken, "found_by": found_by, "margin": m, "attacked": attacked}
