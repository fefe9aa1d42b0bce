"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1), untargeted, L-inf or L2, with per-sample early stopping.

Written in torch rather than calling ART's AutoProjectedGradientDescent because the audit stops a
sample at its first misclassified iterate, and ART evaluates the loss with an extra forward pass per
step and round-trips through NumPy between steps. The algorithm follows the authors' reference code:
step size 2*eps (halved at checkpoints when fewer than rho=0.75 of the steps since the last checkpoint
raised the loss, or when neither the step size nor the best loss changed), momentum alpha=0.75,
restart from the best point at each reduction, checkpoints at 22% of the budget then shrinking
intervals (by 3%, at least 6%), a seeded uniform random start in the ball per restart.

Each sample's schedule (its step counter, checkpoints, step size, best point) is its own, so samples
at different steps share a pass (slots.attack_in_slots).

Arguments and result as pgd.pgd; `start` (N, C, H, W) optional first-restart starting points.
Targeted (APGD-T, same paper): `targets` (N, restarts) gives each restart its own target class per sample,
and loss_fn is a targeted loss (losses.TargetedDifferenceOfLogitsRatio); a sample still counts as broken
when any class but its label wins, as in AutoAttack.
"""

from __future__ import annotations

import numpy as np
import torch

from .ball import ascent_direction, project, random_start
from .slots import attack_in_slots


def checkpoints(steps: int) -> set[int]:
    first, shortest, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    points, k, interval = set(), first, first
    while k < steps:
        points.add(k)
        interval = max(interval - shrink, shortest)
        k += interval
    return points


def apgd(model, loss_fn, x, y, *, eps: float, norm: str, steps: int = 20, step_size: float = 2.0,
         restarts: int = 1, seed: int = 0, ids=None, start=None, rho: float = 0.75, alpha: float = 0.75,
         width: int = 64, targets: torch.Tensor | None = None) -> torch.Tensor:
    ids = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)
    is_mark = torch.zeros(steps + 1, dtype=torch.bool, device=x.device)
    is_mark[sorted(checkpoints(steps))] = True

    def init(pick: np.ndarray, restart: int):
        p = torch.as_tensor(pick, device=x.device)
        x0 = x[p]
        if restart == 0 and start is not None:
            cur = project(start[p], x0, eps, norm)
        else:
            cur = random_start(x0, eps, norm, seed=seed, ids=ids[pick].tolist(), salt=f"apgd{restart}")
        n = torch.zeros(len(pick), device=x.device)
        aimed = {} if targets is None else {"target": targets[p, restart]}
        return {**aimed, "x0": x0, "y": y[p], "cur": cur, "prev": cur, "eta": n + step_size * eps,
                "best": cur, "best_grad": torch.zeros_like(cur), "best_loss": n, "last_loss": n, "mark_loss": n,
                "n_up": n, "reduced": n == 0, "last_mark": n}

    def advance(s, loss, grad, k):
        first, kf = k == 0, k.float()
        s["n_up"] = torch.where(first, 0.0, s["n_up"] + (loss > s["last_loss"]).float())
        better = first | (loss > s["best_loss"])
        s["best"] = torch.where(_b(better, grad), s["cur"], s["best"])
        s["best_grad"] = torch.where(_b(better, grad), grad, s["best_grad"])
        s["best_loss"] = torch.where(better, loss, s["best_loss"])
        s["last_loss"] = loss
        s["mark_loss"] = torch.where(first, loss, s["mark_loss"])
        # at a checkpoint: halve the step and go back to the best point if the loss oscillated or stalled
        at_mark = is_mark[k]
        oscillating = s["n_up"] <= rho * (kf - s["last_mark"])
        stalled = ~s["reduced"] & (s["mark_loss"] >= s["best_loss"])
        reduce = at_mark & (oscillating | stalled)
        s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
        cur = torch.where(_b(reduce, grad), s["best"], s["cur"])
        grad = torch.where(_b(reduce, grad), s["best_grad"], grad)
        s["reduced"] = torch.where(at_mark, reduce, s["reduced"])
        s["mark_loss"] = torch.where(at_mark, s["best_loss"], s["mark_loss"])
        s["n_up"] = torch.where(at_mark, 0.0, s["n_up"])
        s["last_mark"] = torch.where(at_mark, kf, s["last_mark"])
        # the momentum step; the first step of a restart has none
        z = project(cur + _b(s["eta"], grad) * ascent_direction(grad, norm), s["x0"], eps, norm)
        a = _b(torch.where(first, 1.0, alpha), grad)
        s["prev"], s["cur"] = cur, project(cur + a * (z - cur) + (1 - a) * (cur - s["prev"]), s["x0"], eps, norm)
        return s

    return attack_in_slots(model, loss_fn, x, y, width=width, steps=steps, restarts=restarts, init=init,
                           advance=advance)


def _b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample value shaped to broadcast over `like`'s sample dimensions."""
    return v.view(-1, *([1] * (like.ndim - 1)))
