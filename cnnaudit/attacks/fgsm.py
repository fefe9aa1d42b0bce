"""Fast gradient sign method (Goodfellow et al. 2015), untargeted; for L2 the fast gradient method.

Written in torch rather than calling ART's FastGradientMethod because the direction is the gradient at
the clean image, the same for every eps: one forward and backward pass per sample serves the whole eps
grid, where ART recomputes it per eps.
"""

from __future__ import annotations

from .ball import ascent_direction, loss_and_gradient, project


def fgsm_direction(model, loss_fn, x, y, *, norm: str):
    """The unit steepest-ascent direction at x; `fgsm_step` turns it into the example at any eps."""
    _, grad, _ = loss_and_gradient(model, loss_fn, x, y)
    return ascent_direction(grad, norm)


def fgsm_step(x, direction, *, eps: float, norm: str):
    return project(x + eps * direction, x, eps, norm)
