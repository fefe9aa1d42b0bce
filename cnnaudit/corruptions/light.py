"""Low light, brightness and contrast."""

from __future__ import annotations

import torch

from .ops import luminance
from .rng import normal

GAMMA = 2.2  # the camera response: stored values are linear light ** (1 / 2.2)
FULL_WELL = 1000.0  # photo-electrons at a full-scale pixel before the exposure is cut (a small sensor)
# stops: exposure cut (each halves the light); read_noise: sensor read noise in full-scale linear units,
# rising because a dimmer scene is read out with more analogue gain; desaturation: colour lost (blend
# towards luminance) as the eye and the camera lose chroma in the dark.
LOW_LIGHT = [
    {"stops": 1.0, "read_noise": 0.002, "desaturation": 0.10},
    {"stops": 1.75, "read_noise": 0.003, "desaturation": 0.20},
    {"stops": 2.5, "read_noise": 0.004, "desaturation": 0.30},
    {"stops": 3.25, "read_noise": 0.005, "desaturation": 0.40},
    {"stops": 4.0, "read_noise": 0.006, "desaturation": 0.50},
]
BRIGHTNESS = [0.1, 0.2, 0.3, 0.4, 0.5]  # ImageNet-C: added to HSV value
CONTRAST = [0.4, 0.3, 0.2, 0.1, 0.05]  # ImageNet-C: remaining share of the deviation from the mean


def low_light(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    """Exposure cut by k stops in linear light, then Poisson-Gaussian sensor noise (shot noise with
    variance proportional to the collected light, plus read noise), then desaturation, then back through
    the camera response. Relative noise grows as 2^(k/2) from the shot noise alone."""
    p = LOW_LIGHT[severity - 1]
    linear = x.clamp(0, 1) ** GAMMA * 2.0 ** (-p["stops"])
    sigma = torch.sqrt(linear / FULL_WELL + p["read_noise"] ** 2)
    noisy = (linear + sigma * normal(keys, tuple(x.shape[1:]), stream=40)).clamp(0, 1)
    grey = luminance(noisy)
    noisy = noisy * (1 - p["desaturation"]) + grey * p["desaturation"]
    return noisy.clamp(0, 1) ** (1 / GAMMA)


def brightness(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    """Value (max over channels) raised by c with hue and saturation kept: scaling RGB by V'/V does that."""
    v = x.max(dim=1, keepdim=True).values
    target = (v + BRIGHTNESS[severity - 1]).clamp(max=1.0)
    return torch.where(v > 1e-6, x * target / v.clamp_min(1e-6), target.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * CONTRAST[severity - 1] + mean).clamp(0, 1)
