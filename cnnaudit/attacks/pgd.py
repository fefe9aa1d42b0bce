"""Projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks"), untargeted, L-inf or L2, with per-sample early stopping.

Written in torch rather than calling ART's ProjectedGradientDescent because the audit only asks
"is this sample broken?": a sample is finished the moment an iterate is misclassified, and ART keeps
stepping every sample to the last iteration and round-trips through NumPy between steps. The steps
themselves are ART's (and the paper's): x <- P(x + step_size * eps * direction(grad)). The first
restart starts at x (ART's default, num_random_init=0), further restarts from seeded random points.
Finishing a sample early can only make the attack stronger: the trajectory is the same up to the
misclassified iterate, which is kept.

Arguments: loss_fn maps (logits, labels) to per-sample losses; x in [0, 1] (N, C, H, W); y class
indices (N,); ids the sample ids that seed the random starts. Returns (x_adv, fooled): examples inside
the ball and [0, 1], and whether each is misclassified.
"""

from __future__ import annotations

import torch

from .ball import ascent_direction, loss_and_gradient, predicted, project, random_start, survivors


def pgd(model, loss_fn, x, y, *, eps: float, norm: str, steps: int = 10, step_size: float = 0.25,
        restarts: int = 1, seed: int = 0, ids=None):
    ids = list(range(len(x))) if ids is None else [int(i) for i in ids]
    x_adv, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for restart in range(max(1, restarts)):
        idx = (~fooled).nonzero()[:, 0]
        if not len(idx):
            break
        x0, y0 = x[idx], y[idx]
        cur = x0.clone() if restart == 0 else random_start(
            x0, eps, norm, seed=seed, ids=[ids[i] for i in idx.tolist()], salt=f"pgd{restart}")
        for step in range(steps + 1):
            if step == steps:  # the last iterate needs only a prediction
                hit = predicted(model, cur) != y0
            else:
                _, grad, pred = loss_and_gradient(model, loss_fn, cur, y0)
                hit = pred != y0
            x_adv[idx] = cur
            fooled[idx] = fooled[idx] | hit
            keep = survivors(hit)  # the step's one host sync
            if step == steps or not len(keep):
                break
            idx, x0, y0, cur, grad = idx[keep], x0[keep], y0[keep], cur[keep], grad[keep]
            cur = project(cur + step_size * eps * ascent_direction(grad, norm), x0, eps, norm)
    return x_adv, fooled
