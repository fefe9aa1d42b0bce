"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"), untargeted, L-inf and L2, with per-sample early stopping.

Why it is here: it needs no gradients. A model that quantizes its input, or otherwise hides its gradients
(Athalye et al. 2018), stops PGD and APGD dead, and only a gradient-free attack measures it honestly.

The algorithm follows the authors' reference code (github.com/max-andr/square-attack, attack.py, and the
version in AutoAttack, fra31/auto-attack, autoattack/square.py); written here rather than called from
ART because the audit needs per-sample seeding by sample id (ART draws one window for the whole batch
from a global generator) and runs on the model's device without NumPy round trips:
- the loss is the logit margin z_y - max_{k!=y} z_k, minimised; a sample stops at its first
  misclassified query. Only a sample's own losses are compared, so a positive rescaling of the logits
  changes nothing (a x10^4 twin gets the same queries and decisions);
- L-inf: start from vertical stripes of +-eps (one sign per channel and column); each query sets a
  random s x s window of every channel to +-eps (one sign per channel);
- L2: start from a grid of pseudo-Gaussian blocks with random signs, scaled to norm eps; each query
  moves the mass of a second random window into a first one, reshaped as a pseudo-Gaussian bump;
- s follows the paper's schedule: p (the fraction of pixels changed) starts at p_init and halves at
  10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries (rescaled to the budget).
A query is kept when it lowers the margin (or misclassifies). `queries` counts model calls per sample,
the initial point included.

Per-sample seeding: every random number a sample uses (its start, its windows, signs and transposes, for
every query) comes from its own generator, seeded by (seed, sample id), so its trajectory does not depend
on its batch, position or process; a sample's queries are numbered from its own start.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..seeds import sample_seed
from .ball import project
from .eot import vote
from .losses import margin

TIE = 1e-5  # relative to the spread of a sample's logits: smaller margin changes are float noise
P_INIT = 0.8  # AutoAttack's setting for both norms (the paper tunes 0.05 / 0.1 for ImageNet)
SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
            (8000, 256), (10000, 512))


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of pixels a query changes at iteration `it` of `n_iters` (the paper's piecewise schedule)."""
    t = int(it / n_iters * 10000)
    for (lo, div), (hi, nxt) in zip(SCHEDULE, SCHEDULE[1:]):
        if lo < t <= hi:
            return p_init / nxt
    return p_init


def margin_and_vote(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logit margin z_y - max_{k!=y} z_k (averaged over a randomized model's draws), whether the sample is
    misclassified (by most draws: eot.vote), and the spread (std) of its logits."""
    draws = getattr(model, "draws", 1)
    margins, preds, spread = [], [], []
    with torch.no_grad():
        for _ in range(draws):
            z = model(x).float()
            margins.append(-margin(z, y))  # losses.margin is the competitor's lead; Square minimises y's
            preds.append(z.argmax(dim=1))
            spread.append(z.std(dim=1))
    return (torch.stack(margins).mean(dim=0), vote(torch.stack(preds), y, z.shape[1]) != y,
            torch.stack(spread).mean(dim=0))


def _pseudo_gaussian(h: int, w: int) -> torch.Tensor:
    """Concentric rectangles weighted 1/(k+1)^2 around the centre, unit L2 norm (the reference's
    pseudo_gaussian_pert_rectangles)."""
    delta = torch.zeros(h, w)
    ch, cw = h // 2, w // 2
    for k in range(max(h // 2 + 1, w // 2 + 1)):
        delta[max(ch - k, 0):min(ch - k + 2 * k + 1, h), max(cw - k, 0):min(cw - k + 2 * k + 1, w)] += 1.0 / (k + 1) ** 2
    return delta / delta.norm().clamp_min(1e-12)


def _bump(s: int) -> torch.Tensor:
    """The reference's meta_pseudo_gaussian_pert: a positive and a negative half, unit norm, (s, s)."""
    delta = torch.zeros(s, s)
    if s // 2:
        delta[:s // 2] = _pseudo_gaussian(s // 2, s)
    delta[s // 2:] = -_pseudo_gaussian(s - s // 2, s)
    return delta / delta.norm().clamp_min(1e-12)


class _Streams:
    """Each sample's random numbers, from its own generator: its start's draws, then (queries, k) uniforms."""

    def __init__(self, ids, seed: int, norm: str, device):
        self.gens = [torch.Generator().manual_seed(sample_seed(seed, sid, f"square-{norm}")) for sid in ids]
        self.device = device

    def draw(self, *shape) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens]).to(self.device)


def _window_mask(top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(N, 1, h, w) masks of each sample's s x s window at (top, left)."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None].float()


def _corner(u: torch.Tensor, room: int) -> torch.Tensor:
    return (u * (room + 1)).long().clamp(max=room)


def square(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, queries: int = 1000, seed: int = 0,
           ids=None, width: int = 64, p_init: float = P_INIT) -> torch.Tensor:
    """Adversarial examples for (x, y) inside the `norm` ball of radius eps and [0, 1]: each the first
    misclassified query, else the lowest-margin point found in `queries` model calls."""
    ids = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)
    out = x.clone()
    for i in range(0, len(x), width):
        out[i:i + width] = _square_chunk(model, x[i:i + width], y[i:i + width], eps=eps, norm=norm, queries=queries,
                                         seed=seed, ids=ids[i:i + width], p_init=p_init)
    return out


def _square_chunk(model, x, y, *, eps, norm, queries, seed, ids, p_init) -> torch.Tensor:
    n, c, h, w = x.shape
    iters = max(queries - 1, 0)
    rng = _Streams(ids.tolist(), seed, norm, x.device)
    if norm == "linf":
        best = project(x + eps * _signs(rng.draw(c, 1, w)), x, eps, norm)
    else:
        best = project(x + _l2_start(rng, c, h, w) * eps, x, eps, norm)
    draws = rng.draw(iters, 2 + c if norm == "linf" else 5 + c)  # per query: window(s), signs, transpose
    margin, wrong, spread = margin_and_vote(model, best, y)
    # a query counts as better only beyond float noise of the logits: a x10^4 twin rounds its margins
    # differently, and without a tolerance its near-ties would go other ways (measured: 8 of 32 samples
    # followed other trajectories at 150 queries)
    tol = TIE * spread
    active = torch.nonzero(~wrong)[:, 0]
    for it in range(iters):
        if not len(active):
            break
        u = draws[active, it]
        x0, cur, yy = x[active], best[active], y[active]
        p = p_selection(p_init, it, iters)
        if norm == "linf":
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            mask = _window_mask(_corner(u[:, 0], h - s), _corner(u[:, 1], w - s), s, h, w)
            cand = cur + mask * (2 * eps) * _signs(u[:, 2:2 + c])[:, :, None, None]
            cand = project(cand, x0, eps, norm)
        else:
            cand = _l2_query(x0, cur, u, p, eps, c, h, w)
        new_margin, new_wrong, _ = margin_and_vote(model, cand, yy)
        better = (new_margin < margin[active] - tol[active]) | new_wrong
        best[active] = torch.where(better[:, None, None, None], cand, cur)
        margin[active] = torch.where(better, new_margin, margin[active])
        wrong[active] = new_wrong
        active = active[~new_wrong]  # the query's one host wait: how many samples are left
    return best


def _signs(u: torch.Tensor) -> torch.Tensor:
    return (u < 0.5).float() * 2 - 1


def _l2_start(rng: _Streams, c: int, h: int, w: int) -> torch.Tensor:
    """The reference's L2 start: a centred grid of pseudo-Gaussian blocks of side min(h, w) // 5, a random
    sign per block and channel, scaled to unit norm."""
    s = max(min(h, w) // 5, 1)
    blocks_h, blocks_w = h // s, w // s
    sign = _signs(rng.draw(blocks_h, blocks_w, c))  # (n, bh, bw, c)
    delta = torch.zeros(len(sign), c, h, w, device=sign.device)
    top0, left0 = (h - s * blocks_h) // 2, (w - s * blocks_w) // 2
    bump = _bump(s).to(sign.device) if s > 1 else torch.ones(1, 1, device=sign.device)
    for bi in range(blocks_h):
        for bj in range(blocks_w):
            r, q = top0 + bi * s, left0 + bj * s
            delta[:, :, r:r + s, q:q + s] += bump * sign[:, bi, bj, :, None, None]
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]


def _l2_query(x0, cur, u, p, eps, c, h, w) -> torch.Tensor:
    """One L2 query (the reference's update): window 1 gets a pseudo-Gaussian bump plus its old content,
    rescaled to carry its own and window 2's mass (and the budget left unused); window 2 is emptied."""
    n = len(x0)
    s = max(int(round(math.sqrt(p * h * w))), 3)
    s += (s % 2 == 0)
    s = min(s, h, w)
    top1, left1 = _corner(u[:, 0], h - s), _corner(u[:, 1], w - s)
    top2, left2 = _corner(u[:, 2], h - s), _corner(u[:, 3], w - s)
    m1, m2 = _window_mask(top1, left1, s, h, w), _window_mask(top2, left2, s, h, w)
    delta = cur - x0
    norm_image = delta.flatten(1).norm(dim=1)[:, None, None, None]
    norm_w1 = (delta * m1).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # per channel
    norm_both = (delta * torch.maximum(m1, m2)).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    rows = top1[:, None] + torch.arange(s, device=x0.device)  # (n, s)
    cols = left1[:, None] + torch.arange(s, device=x0.device)
    ni, ci = torch.arange(n, device=x0.device)[:, None, None, None], torch.arange(c, device=x0.device)[None, :, None, None]
    ri, qi = rows[:, None, :, None], cols[:, None, None, :]
    old = delta[ni, ci, ri, qi] / (norm_w1 + 1e-12)
    bump = _bump(s).to(x0.device)
    bumps = torch.where((u[:, 4] < 0.5)[:, None, None], bump, bump.T)  # a random transpose per sample
    new = bumps[:, None] * _signs(u[:, 5:5 + c])[:, :, None, None] + old
    room = (torch.clamp(eps ** 2 - norm_image ** 2, min=0.0) / c + norm_both ** 2).sqrt()
    new = new / new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12) * room
    delta = delta * (1 - m2)
    delta[ni, ci, ri, qi] = new
    delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None] * eps
    return project(x0 + delta, x0, eps, "l2")
