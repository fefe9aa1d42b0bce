"""Attack losses that cannot be fooled by the scale of the logits.

A model whose logits are multiplied by 10^4 makes the same decisions as its twin, but its softmax
saturates: cross-entropy gradients underflow to zero and a cross-entropy PGD reports ~95% robust
accuracy where the twin has 0% (gradient masking by scaling; Carlini et al. 2019, Croce & Hein 2020).
Both losses here are invariant to a positive rescaling of the logits, so such twins get identical
attack directions and therefore identical robust accuracy:

- `ScaleInvariantCrossEntropy`: cross-entropy (in its log-odds form, see the class) on logits rescaled
  (by a detached per-sample factor) to a canonical standard deviation of 6. The canonical scale matters: at std 1 the softmax is so soft that
  the gradient pushes towards all classes alike instead of the nearest one. Measured with PGD-10 on
  the demo digits CNN (its own logit std is 6.9), robust accuracy at L-inf 0.1: plain CE 0.280,
  std 1: 0.377 (much weaker), std 5: 0.277, std 10: 0.280; with the logits x 10^4 plain CE reports
  0.963 while every rescaled variant reports the same number as for the unscaled model. In the full
  cascade against ART's plain-CE attacks (benchmarks/bench_adversarial.py, 300 digits, 7 budgets),
  std 8 was one sample weaker at 2 budgets, std 5 one weaker at 1, std 6 at least as strong at all 7;
- `DifferenceOfLogitsRatio`: the DLR loss of Croce & Hein 2020, -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3),
  vectorised (ART's own DLR loops over samples in Python).

- `Margin`: the margin -(z_y - max_{i!=y} z_i) (Carlini & Wagner 2017), for two-class models, where DLR's
  denominator (top logit minus third) does not exist and every scale-invariant function of two logits
  is a function of the sign of their difference (zero gradient). The margin's own value scales with
  the logits, but nothing an attack decides depends on that value's scale: steps follow the sign (L-inf)
  or the normalised direction (L2) of the gradient, and APGD only compares a sample's losses across its
  own iterates. So a model and its x10^4 twin get identical steps and decisions. For two classes the
  scale-invariant cross-entropy is not used either: rescaled to a fixed logit spread, its value is the
  same at every iterate (APGD's comparisons would all tie), while its gradient is the margin's times a
  positive factor.

All accept class indices or one-hot targets (ART passes one-hot to custom losses) and honour
`self.reduction`, which ART's APGD switches to 'none' for its per-image step size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss


def _indices(target: torch.Tensor) -> torch.Tensor:
    return target.argmax(dim=1) if target.ndim == 2 else target.long()


def _others(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z with each sample's true-class logit set to -inf: the competitors."""
    return z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf"))


def margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Best competing logit minus the true one: positive exactly when the sample is misclassified."""
    return _others(z, y).max(dim=1).values - z.gather(1, y[:, None])[:, 0]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


CANONICAL_LOGIT_STD = 6.0


class ScaleInvariantCrossEntropy(_Loss):
    """Cross-entropy of logits rescaled to the canonical spread, computed in its log-odds form.

    It returns L = log sum_{k!=y} exp(z_k - z_y), the log-odds of an error, rather than CE = softplus(L):
    the same function up to a per-sample increasing transform, so an attack takes exactly the same steps
    (sign and normalised direction of the gradient are unchanged) and APGD ranks iterates the same way.
    What changes is float32 arithmetic on confident samples: CE's gradient on the true class is p_y - 1,
    which rounds to exactly 0 once the margin passes ~17 nats, leaving only the competitors' push (a
    wrong direction), and its size (~e^-margin) underflows. L's gradient, softmax weights over the
    other classes minus one on the true class, is exact at every margin."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        y = _indices(target).to(z.device)
        scale = z.std(dim=1, keepdim=True).detach().clamp_min(1e-12) / CANONICAL_LOGIT_STD
        zs = z / scale
        return _reduce(torch.logsumexp(_others(zs, y) - zs.gather(1, y[:, None]), dim=1), self.reduction)


class Margin(_Loss):
    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        return _reduce(margin(z, _indices(target).to(z.device)), self.reduction)


def losses_for(num_classes: int) -> dict[str, type[_Loss]]:
    """The loss each attack loss name means for a model with this many classes."""
    if num_classes < 3:
        return {"ce": Margin, "dlr": Margin}
    return {"ce": ScaleInvariantCrossEntropy, "dlr": DifferenceOfLogitsRatio}


class DifferenceOfLogitsRatio(_Loss):
    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        y = _indices(target).to(z.device)
        top = z.sort(dim=1, descending=True).values
        return _reduce(margin(z, y) / (top[:, 0] - top[:, 2] + 1e-12), self.reduction)


class TargetedDifferenceOfLogitsRatio(_Loss):
    """The targeted DLR of Croce & Hein 2020 (APGD-T), -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), scale-invariant
    like DLR; with three classes the denominator is z_pi1 - z_pi3. Called as loss(logits, y, target)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, aim: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        y, t = _indices(target).to(z.device), aim.long().to(z.device)
        top = z.sort(dim=1, descending=True).values
        spread = top[:, 0] - (0.5 * (top[:, 2] + top[:, 3]) if z.shape[1] > 3 else top[:, 2])
        gap = z.gather(1, t[:, None])[:, 0] - z.gather(1, y[:, None])[:, 0]
        return _reduce(gap / (spread + 1e-12), self.reduction)


def top_targets(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) target classes: each sample's k highest-scoring classes other than its label (AutoAttack's
    choice for APGD-T)."""
    return _others(logits.float(), y).topk(min(k, logits.shape[1] - 1), dim=1).indices
