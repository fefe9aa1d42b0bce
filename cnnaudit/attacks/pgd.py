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
indices (N,); ids the sample ids that seed the random starts; width how many samples share a pass
(slots.attack_in_slots: N may be larger). Returns x_adv (N, C, H, W): examples inside the ball and
[0, 1], each the first misclassified iterate or the last one tried.
"""

from __future__ import annotations

import numpy as np
import torch

from .ball import ascent_direction, project, random_start
from .slots import attack_in_slots


def pgd(model, loss_fn, x, y, *, eps: float, norm: str, steps: int = 10, step_size: float = 0.25,
        restarts: int = 1, seed: int = 0, ids=None, width: int = 64) -> torch.Tensor:
    ids = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)

    def init(pick: np.ndarray, restart: int):
        p = torch.as_tensor(pick, device=x.device)
        x0 = x[p]
        cur = x0.clone() if restart == 0 else random_start(x0, eps, norm, seed=seed, ids=ids[pick].tolist(),
                                                           salt=f"pgd{restart}")
        return {"x0": x0, "y": y[p], "cur": cur}

    def advance(s, loss, grad, k):
        s["cur"] = project(s["cur"] + step_size * eps * ascent_direction(grad, norm), s["x0"], eps, norm)
        return s

    return attack_in_slots(model, loss_fn, x, y, width=width, steps=steps, restarts=restarts, init=init,
                           advance=advance)
