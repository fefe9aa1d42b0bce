"""The geometry every gradient attack shares: eps balls in [0, 1], steepest-ascent steps, seeded random starts.

Tensors are images in [0, 1] of shape (N, C, H, W) on the model's device; eps is in the same pixel units.
"""

from __future__ import annotations

import torch

from ..seeds import sample_seed


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Nearest point of the `norm` ball of radius eps around x, then clipped to [0, 1].

    Clipping after the ball projection only shrinks every coordinate of the perturbation towards x, so
    the result stays inside the ball."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * _per_sample(torch.clamp(eps / size, max=1.0), x)
    return (x + delta).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest ascent of unit size in the norm: sign for L-inf, the normalised gradient for L2.

    For L2 each gradient is first divided by its largest absolute entry: a confident sample of a
    many-class model has gradients near 1e-25, whose squares underflow float32, and dividing by the
    clamped norm of those would give a step of almost zero length instead of a unit one."""
    if norm == "linf":
        return grad.sign()
    peak = grad.flatten(1).abs().amax(dim=1)
    g = grad / _per_sample(torch.where(peak > 0, peak, torch.ones_like(peak)), grad)
    return g / _per_sample(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)


def random_start(x: torch.Tensor, eps: float, norm: str, *, seed: int, ids, salt: str) -> torch.Tensor:
    """A point drawn uniformly from each sample's eps ball (then clipped to [0, 1]), seeded per sample."""
    dim = x[0].numel()
    noise = []
    for sid in ids:
        g = torch.Generator().manual_seed(sample_seed(seed, sid, salt))
        if norm == "linf":
            noise.append((torch.rand(x.shape[1:], generator=g) * 2 - 1) * eps)
        else:  # uniform in the L2 ball: a Gaussian direction, radius eps * U^(1/d)
            d = torch.randn(x.shape[1:], generator=g)
            r = torch.rand((), generator=g) ** (1.0 / dim)
            noise.append(d / d.norm().clamp_min(1e-12) * eps * r)
    return project(x + torch.stack(noise).to(x.device, x.dtype), x, eps, norm)


def loss_and_gradient(model, loss_fn, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
    """Per-sample loss, its input gradient and the predicted class, from one forward and one backward pass;
    for a randomized model (eot.Draws) the loss and gradient averaged over its draws and the majority vote.
    `target`: per-sample target classes, for a targeted loss (called as loss_fn(logits, y, target))."""
    draws = getattr(model, "draws", 1)
    x = x.detach().requires_grad_(True)
    losses, grads, preds = [], [], []
    for _ in range(draws):
        with torch.enable_grad():
            logits = model(x)
            loss = loss_fn(logits, y) if target is None else loss_fn(logits, y, target)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        losses.append(loss.detach())
        grads.append(grad.detach())
        preds.append(logits.detach().argmax(dim=1))
    if draws == 1:
        return losses[0], grads[0], preds[0]
    from .eot import vote
    return (torch.stack(losses).mean(dim=0), torch.stack(grads).mean(dim=0),
            vote(torch.stack(preds), y, logits.shape[1]))


BOUND_TOL = 1e-5  # float32 rounding in ART's projections; anything beyond is a bug, not noise


def check_bounds(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Assert the eps ball and [0, 1], then remove float rounding so stored examples are exactly inside."""
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
    if len(size) and (float(size.max()) > eps * (1 + BOUND_TOL) + 1e-7
                      or float(x_adv.min()) < -1e-6 or float(x_adv.max()) > 1 + 1e-6):
        raise AssertionError(f"attack left the {norm} ball of radius {eps} or [0, 1] (max size {float(size.max())})")
    return project(x_adv, x, eps, norm)


def output_diversified_start(model, x: torch.Tensor, eps: float, norm: str, *, seed: int, ids, salt: str,
                             steps: int = 2, width: int = 64) -> torch.Tensor:
    """Output-diversified initialisation (Tashiro, Song & Ermon 2020, "Diversity can be transferred: output
    diversification for white- and black-box attacks"): from a seeded random point of the ball, `steps`
    steps of size eps that maximise w . logits for a random direction w ~ U(-1, 1)^classes drawn per sample.
    Starts spread out in the model's output space rather than its input space, which on adversarially
    trained models (flat loss near x) reaches regions a uniform start does not. The steps follow the sign
    (L-inf) or the normalised direction (L2) of the gradient, so a positive rescaling of the logits
    changes nothing. `width` samples a pass."""
    if len(x) > width:
        return torch.cat([output_diversified_start(model, x[i:i + width], eps, norm, seed=seed, ids=ids[i:i + width],
                                                   salt=salt, steps=steps, width=width)
                          for i in range(0, len(x), width)])
    cur = random_start(x, eps, norm, seed=seed, ids=ids, salt=f"{salt}-start")
    with torch.no_grad():
        n_classes = model(cur[:1]).shape[1]
    w = torch.stack([torch.rand(n_classes, generator=torch.Generator().manual_seed(sample_seed(seed, sid, salt))) * 2 - 1
                     for sid in ids]).to(x.device)
    for _ in range(steps):
        cur = cur.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad((model(cur).float() * w).sum(), cur)
        cur = project(cur.detach() + eps * ascent_direction(grad, norm), x, eps, norm)
    return cur.detach()
