"""Run an attack spec on a batch: cnnaudit's torch attacks by default, ART's on request (and for AutoAttack).

The torch path never leaves the model's device; ART's estimators convert through NumPy between every
call (measured on the demo grid in benchmarks/bench_adversarial.py).
"""

from __future__ import annotations

import numpy as np
import torch

from .apgd import apgd
from .art_backend import ArtAttacks
from .ball import loss_and_gradient, output_diversified_start
from .fgsm import fgsm_direction, fgsm_step
from .pgd import pgd
from .losses import TargetedDifferenceOfLogitsRatio, losses_for, top_targets
from .square import square
from .specs import AttackSpec

BACKENDS = ("torch", "art")


class AttackRunner:
    def __init__(self, model, *, num_classes: int, batch_size: int = 64, backend: str = "torch"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown attack backend {backend!r}")
        self.model = model
        self.num_classes = num_classes
        self.backend = backend
        self.batch_size = batch_size
        self.art = ArtAttacks(model, num_classes=num_classes, batch_size=batch_size)
        self.losses = {name: cls(reduction="none") for name, cls in losses_for(num_classes).items()}

    def fgsm(self, x: torch.Tensor, y: torch.Tensor, *, eps_list, norm: str, seed: int) -> dict:
        """FGSM examples at every eps of the grid: {eps: x_adv}."""
        if len(x) > self.batch_size:
            parts = [self.fgsm(xb, yb, eps_list=eps_list, norm=norm, seed=seed) for xb, yb in
                     zip(x.split(self.batch_size), y.split(self.batch_size))]
            return {eps: torch.cat([p[eps] for p in parts]) for eps in eps_list}
        if self.backend == "art":
            spec = AttackSpec("fgsm", "fgm", "ce")
            return {eps: self.art.run(spec, x, y, eps=eps, norm=norm, seed=seed) for eps in eps_list}
        direction = fgsm_direction(self.model, self.losses["ce"], x, y, norm=norm)
        return {eps: fgsm_step(x, direction, eps=eps, norm=norm) for eps in eps_list}

    def run(self, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, seed: int,
            ids=None, start=None) -> torch.Tensor:
        """Adversarial examples for (x, y) within the `norm` ball of radius eps, in [0, 1]."""
        if not len(x):
            return x.clone()
        if spec.method == "square":  # ART's Square draws one window per batch: no per-sample seeding
            return square(self.model, x, y, eps=float(eps), norm=norm, queries=spec.steps, seed=seed, ids=ids,
                          width=self.batch_size)
        if self.backend == "art" or spec.method == "autoattack":
            if len(x) > self.batch_size:  # survivors pooled from several batches: ART's attacks batch_size at a time
                return torch.cat([self.art.run(spec, xb, yb, eps=eps, norm=norm, seed=seed) for xb, yb in
                                  zip(x.split(self.batch_size), y.split(self.batch_size))])
            return self.art.run(spec, x, y, eps=eps, norm=norm, seed=seed)
        if spec.method == "fgm":
            return self.fgsm(x, y, eps_list=[eps], norm=norm, seed=seed)[eps]
        if spec.start == "odi":
            start = output_diversified_start(self.model, x, float(eps), norm, seed=seed, salt=spec.name,
                                             ids=np.arange(len(x)) if ids is None else np.asarray(ids),
                                             width=self.batch_size)
        # any number of samples: the iterative attacks keep batch_size of them in each pass (attacks/slots.py)
        kw = dict(eps=float(eps), norm=norm, steps=spec.steps, step_size=spec.step_size, restarts=spec.restarts,
                  seed=seed, ids=ids, width=self.batch_size)
        if spec.method == "pgd":
            return pgd(self.model, self.losses[spec.loss], x, y, **kw)
        if spec.method == "apgd_t":
            return self.apgd_targeted(spec, x, y, start=start, **kw)
        return apgd(self.model, self.losses[spec.loss], x, y, start=start, **kw)

    def apgd_targeted(self, spec: AttackSpec, x, y, *, start, **kw) -> torch.Tensor:
        """APGD-T: one run per target class (the `restarts` highest-scoring wrong classes on the clean image, or at
        the start point when spec.rank_at is "start").
        Two classes have one wrong class, which the untargeted attacks already aim at: x is returned."""
        if self.num_classes < 3:
            return x.clone()
        at = start if spec.rank_at == "start" and start is not None else x
        with torch.no_grad():
            logits = torch.cat([self.model(xb) for xb in at.split(self.batch_size)])
        targets = top_targets(logits, y, kw.pop("restarts"))
        return apgd(self.model, TargetedDifferenceOfLogitsRatio(reduction="none"), x, y, start=start,
                    targets=targets, restarts=targets.shape[1], **kw)

    def usable_gradient_share(self, loss: str, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of samples whose input gradient of `loss` is finite and non-zero."""
        _, grad, _ = loss_and_gradient(self.model, self.losses[loss], x, y)
        per = grad.flatten(1).abs().sum(dim=1)
        return float((torch.isfinite(per) & (per > 0)).float().mean())
