"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1), untargeted, L-inf or L2, with per-sample early stopping.

Written in torch rather than calling ART's AutoProjectedGradientDescent because the audit stops a
sample at its first misclassified iterate, and ART evaluates the loss with an extra forward pass per
step and round-trips through NumPy between steps. The algorithm follows the authors' reference code:
step size 2*eps (halved at checkpoints when fewer than rho=0.75 of the steps since the last checkpoint
raised the loss, or when neither the step size nor the best loss changed), momentum alpha=0.75,
restart from the best point at each reduction, checkpoints at 22% of the budget then shrinking
intervals (by 3%, at least 6%), a seeded uniform random start in the ball per restart.

Arguments and result as pgd.pgd.
"""

from __future__ import annotations

import torch

from .ball import ascent_direction, loss_and_gradient, predicted, project, random_start, survivors


def checkpoints(steps: int) -> set[int]:
    first, shortest, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    points, k, interval = set(), first, first
    while k < steps:
        points.add(k)
        interval = max(interval - shrink, shortest)
        k += interval
    return points


def apgd(model, loss_fn, x, y, *, eps: float, norm: str, steps: int = 20, step_size: float = 2.0,
         restarts: int = 1, seed: int = 0, ids=None, start=None, rho: float = 0.75, alpha: float = 0.75):
    ids = list(range(len(x))) if ids is None else [int(i) for i in ids]
    x_adv, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    marks = checkpoints(steps)
    for restart in range(max(1, restarts)):
        idx = (~fooled).nonzero()[:, 0]
        if not len(idx):
            break
        s = {"x0": x[idx], "y": y[idx]}
        if restart == 0 and start is not None:
            s["cur"] = project(start[idx], s["x0"], eps, norm)
        else:
            s["cur"] = random_start(s["x0"], eps, norm, seed=seed, ids=[ids[i] for i in idx.tolist()],
                                    salt=f"apgd{restart}")
        s["prev"] = s["cur"]
        s["eta"] = torch.full((len(idx),), step_size * eps, device=x.device)
        last_mark = 0
        for k in range(steps + 1):
            if k == steps:
                hit = predicted(model, s["cur"]) != s["y"]
            else:
                loss, grad, pred = loss_and_gradient(model, loss_fn, s["cur"], s["y"])
                hit = pred != s["y"]
            x_adv[idx] = s["cur"]
            fooled[idx] = fooled[idx] | hit
            keep = survivors(hit)  # the step's one host sync
            if k == steps or not len(keep):
                break
            if k == 0:
                s.update(best_loss=loss, best=s["cur"], best_grad=grad, last_loss=loss,
                         n_up=torch.zeros_like(loss), mark_loss=loss, reduced=torch.ones_like(loss, dtype=torch.bool))
            else:
                s["n_up"] = s["n_up"] + (loss > s["last_loss"]).float()
                better = loss > s["best_loss"]
                s["best"] = torch.where(_b(better, s["cur"]), s["cur"], s["best"])
                s["best_grad"] = torch.where(_b(better, grad), grad, s["best_grad"])
                s["best_loss"] = torch.where(better, loss, s["best_loss"])
                s["last_loss"] = loss
            s["grad"] = grad
            if k in marks:
                oscillating = s["n_up"] <= rho * (k - last_mark)
                stalled = ~s["reduced"] & (s["mark_loss"] >= s["best_loss"])
                reduce = oscillating | stalled
                s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
                s["cur"] = torch.where(_b(reduce, s["cur"]), s["best"], s["cur"])
                s["grad"] = torch.where(_b(reduce, grad), s["best_grad"], grad)
                s["reduced"], s["mark_loss"], s["n_up"], last_mark = reduce, s["best_loss"], s["n_up"] * 0, k
            idx = idx[keep]
            s = {name: v[keep] for name, v in s.items()}
            eta = s["eta"].view(-1, *([1] * (x.ndim - 1)))
            z = project(s["cur"] + eta * ascent_direction(s["grad"], norm), s["x0"], eps, norm)
            a = 1.0 if k == 0 else alpha
            nxt = project(s["cur"] + a * (z - s["cur"]) + (1 - a) * (s["cur"] - s["prev"]), s["x0"], eps, norm)
            s["prev"], s["cur"] = s["cur"], nxt
    return x_adv, fooled


def _b(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))
