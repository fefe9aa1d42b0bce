"""Attack self-test: can the attacks find an adversarial example that is known to exist?

After Zimmermann, Brendel, Tramèr & Carlini 2022, "Increasing Confidence in Adversarial Robustness
Evaluations" (the binarization test), and Pintor et al. 2022, "Indicators of Attack Failure". An attack
that fails on a sample is evidence of robustness only if the attack would have succeeded where success
was possible. So, on a seeded subset, each sample gets a model variant in which an adversarial example
inside the budget exists by construction, and the cascade is run against it:

- a target point x_t inside the eps ball (a seeded random corner for L-inf, a seeded random point of the
  sphere for L2, clipped to [0, 1]) and `INNER` seeded random points of the ball;
- the variant is a two-class head on the model's own logits f (so gradients pass through the model
  exactly as in the real attack, and any model works, TorchScript included): the score
  s(f) = <f - f(x), f(x_t) - f(x)> / |f(x_t) - f(x)|^2 is 0 at x and 1 at x_t, and the head predicts
  "adversarial" when s > tau, with tau halfway between the largest score of the inner points and 1.
  x is classified clean, x_t adversarial, and none of the random inner points is adversarial, so the
  adversarial region is a small part of the ball that random noise does not hit;
- every subset sample's head lives in one module: a query is routed to the head of the sample whose
  clean image is nearest (samples closer than 2*eps to an earlier one are left out, so the nearest clean
  image of any point of a ball is its own centre), so the real cascade attacks all samples in batches.

The result is the share of these guaranteed adversarials the cascade found; the check passes at >= 95%.
Samples whose target barely moves the logits (|f(x_t) - f(x)| ~ 0) or whose inner points already reach
the target's score cannot host a head and are counted as not built. Randomized models are not tested
(the head would be random too).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..seeds import sample_seed
from .ball import project, random_start

INNER = 8
PASS_SHARE = 0.95
MAX_INNER_SCORE = 0.8  # above this, the adversarial region would reach random points of the ball


class SelfTestModel(nn.Module):
    """Two logits (clean, adversarial) per query, from the head of the sample whose clean image is nearest."""

    def __init__(self, model: nn.Module, anchors: torch.Tensor, f0: torch.Tensor, d: torch.Tensor,
                 tau: torch.Tensor, norm: str):
        super().__init__()
        self.model, self.anchors, self.f0, self.d, self.tau, self.norm = model, anchors, f0, d, tau, norm

    def owner(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([distances(self.anchors, xi, self.norm) for xi in x.detach()]).argmin(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        j = self.owner(x)
        f = self.model(x).float()
        s = ((f - self.f0[j]) * self.d[j]).sum(dim=1) / self.d[j].pow(2).sum(dim=1)
        return torch.stack([torch.zeros_like(s), s - self.tau[j]], dim=1)


def distances(points: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """The `norm` distance from x to each of points."""
    diff = (points - x).flatten(1)
    return diff.abs().amax(dim=1) if norm == "linf" else diff.norm(dim=1)


def target_point(x: torch.Tensor, eps: float, norm: str, *, seed: int, ids) -> torch.Tensor:
    """Each sample's planted adversarial point: a seeded corner (L-inf) or sphere point (L2) of its ball."""
    out = []
    for xi, sid in zip(x, ids):
        g = torch.Generator().manual_seed(sample_seed(seed, sid, "self-test"))
        d = torch.randn(xi.shape, generator=g)
        out.append(d.sign() * eps if norm == "linf" else d / d.norm().clamp_min(1e-12) * eps)
    return project(x + torch.stack(out).to(x.device, x.dtype), x, eps, norm)


def separated(x: torch.Tensor, eps: float, norm: str) -> np.ndarray:
    """Positions of samples farther than 2*eps (in the norm) from every earlier kept sample."""
    keep: list[int] = []
    for i in range(len(x)):
        if keep and float(distances(x[keep], x[i], norm).min()) <= 2 * eps:
            continue
        keep.append(i)
    return np.array(keep, dtype=np.int64)


def build(model, x: torch.Tensor, eps: float, norm: str, *, seed: int, ids) -> tuple[SelfTestModel | None, np.ndarray]:
    """The variant model over the samples that can host a head, and their positions in x."""
    ids = np.asarray(ids, dtype=np.int64)
    pos = separated(x, eps, norm)
    x = x[torch.as_tensor(pos, device=x.device)]
    sid = ids[pos].tolist()
    with torch.no_grad():
        f0 = model(x).float()
        d = model(target_point(x, eps, norm, seed=seed, ids=sid)).float() - f0
        inner = torch.stack([model(random_start(x, eps, norm, seed=seed, ids=sid, salt=f"self-test-inner{m}")).float()
                             for m in range(INNER)])  # (INNER, n, C)
    size = d.pow(2).sum(dim=1)
    scores = ((inner - f0) * d).sum(dim=2) / size.clamp_min(1e-30)
    top = scores.amax(dim=0).clamp_min(0.0)
    usable = (size > 1e-12 * f0.pow(2).sum(dim=1).clamp_min(1.0)) & (top < MAX_INNER_SCORE)
    keep = usable.nonzero()[:, 0]
    if not len(keep):
        return None, np.empty(0, dtype=np.int64)
    tau = (1.0 + top[keep]) / 2
    return SelfTestModel(model, x[keep], f0[keep], d[keep], tau, norm), pos[keep.cpu().numpy()]


def run_self_test(model, make_runner, cascade, x: torch.Tensor, eps: float, norm: str, *, seed: int, ids) -> dict:
    """Share of planted adversarials the cascade finds. make_runner(variant) gives an AttackRunner for a
    two-class model; cascade is a list of AttackSpec (ART's AutoAttack is skipped: it needs its own
    estimator per model and is covered by the torch attacks' strength tests)."""
    variant, pos = build(model, x, eps, norm, seed=seed, ids=ids)
    if variant is None:
        return {"norm": norm, "eps": eps, "built": 0, "found": 0, "tried": len(x), "share": None}
    runner = make_runner(variant)
    xs = variant.anchors
    y = torch.zeros(len(xs), dtype=torch.long, device=xs.device)
    sid = np.asarray(ids, dtype=np.int64)[pos]
    alive = torch.ones(len(xs), dtype=torch.bool, device=xs.device)
    for k, spec in enumerate(s for s in cascade if s.method != "autoattack"):
        idx = alive.nonzero()[:, 0]
        if not len(idx):
            break
        adv = runner.run(spec, xs[idx], y[idx], eps=eps, norm=norm, seed=seed + k, ids=sid[idx.cpu().numpy()])
        adv = project(adv, xs[idx], eps, norm)
        with torch.no_grad():
            hit = variant(adv).argmax(dim=1) != 0
        alive[idx[hit]] = False
    found = int((~alive).sum())
    return {"norm": norm, "eps": eps, "built": len(xs), "found": found, "tried": len(x),
            "share": found / len(xs)}
