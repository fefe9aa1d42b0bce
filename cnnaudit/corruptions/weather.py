"""Rain, snow and fog as batched image models. Lengths and sizes are fractions of the image's shorter
side, so "rain 3" looks alike at 32 and at 224 px. Random fields are keyed by sample and shared across
severities: a higher severity adds drops and flakes to those of the lower one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ops import fractal_noise, gaussian_blur, line_blur, luminance, screen
from .rng import uniform

# density: share of pixels that start a streak; length: of the streak (fraction of the side); brightness:
# of a streak; haze: contrast lost to the wet air (blend towards the mean); blur: of the wet scene (sigma,
# fraction of the side). The fall angle is drawn per image within +-20 degrees of vertical.
RAIN = [
    {"density": 0.002, "length": 0.08, "brightness": 0.50, "haze": 0.08, "blur": 0.003},
    {"density": 0.004, "length": 0.10, "brightness": 0.55, "haze": 0.14, "blur": 0.005},
    {"density": 0.006, "length": 0.12, "brightness": 0.60, "haze": 0.20, "blur": 0.007},
    {"density": 0.009, "length": 0.14, "brightness": 0.65, "haze": 0.26, "blur": 0.009},
    {"density": 0.012, "length": 0.16, "brightness": 0.70, "haze": 0.32, "blur": 0.011},
]

# Three flake sizes (fraction of the side) with their share of pixels; motion: streak length of the
# falling flakes (fraction of the side) at a per-image angle within +-30 degrees of vertical; veil: how much
# of the scene is lifted towards a bright overcast (ImageNet-C's snow does the same with max(x, 1.5 L + 0.5)).
SNOW_SIZES = (0.012, 0.025, 0.045)
SNOW = [
    {"density": (0.010, 0.003, 0.0008), "motion": 0.02, "veil": 0.10, "opacity": 0.7},
    {"density": (0.018, 0.005, 0.0012), "motion": 0.03, "veil": 0.20, "opacity": 0.75},
    {"density": (0.026, 0.008, 0.0018), "motion": 0.04, "veil": 0.30, "opacity": 0.8},
    {"density": (0.036, 0.011, 0.0025), "motion": 0.05, "veil": 0.40, "opacity": 0.85},
    {"density": (0.048, 0.015, 0.0035), "motion": 0.06, "veil": 0.50, "opacity": 0.9},
]

# ImageNet-C's fog: x + c * fractal, rescaled by max / (max + c); decay is its 'wibbledecay'.
FOG = [{"thickness": 1.5, "decay": 2.0}, {"thickness": 2.0, "decay": 2.0}, {"thickness": 2.5, "decay": 1.7},
       {"thickness": 2.5, "decay": 1.5}, {"thickness": 3.0, "decay": 1.4}]


def rain(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    p = RAIN[severity - 1]
    n, _, h, w = x.shape
    side = min(h, w)
    angle = (uniform(keys, (1,), stream=0)[:, 0] - 0.5) * math.radians(40)
    seeds = (uniform(keys, (1, h, w), stream=1) < p["density"]).to(x.dtype)
    streaks = line_blur(seeds, p["length"] * side, angle, total=True, padding="zeros").clamp(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    wet = gaussian_blur(x, p["blur"] * side) * (1 - p["haze"]) + p["haze"] * mean
    return screen(wet, streaks * p["brightness"])


def snow(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    p = SNOW[severity - 1]
    n, _, h, w = x.shape
    side = min(h, w)
    flakes = torch.zeros(n, 1, h, w, device=x.device, dtype=x.dtype)
    for i, (size, density) in enumerate(zip(SNOW_SIZES, p["density"])):
        # a flake of `size` is one cell of a coarser grid, upsampled smoothly
        gh, gw = max(1, round(h / max(1.0, size * side))), max(1, round(w / max(1.0, size * side)))
        cells = (uniform(keys, (1, gh, gw), stream=10 + i) < density * (h * w) / (gh * gw) / 4).to(x.dtype)
        flakes = torch.maximum(flakes, F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False))
    angle = (uniform(keys, (1,), stream=20)[:, 0] - 0.5) * math.radians(60)
    flakes = line_blur(flakes, p["motion"] * side, angle, padding="zeros")
    flakes = (flakes * 2.5).clamp(0, 1)
    overcast = torch.maximum(x, luminance(x) * 1.5 + 0.5).clamp(0, 1)
    veiled = x * (1 - p["veil"]) + overcast * p["veil"]
    return screen(veiled, flakes * p["opacity"])


def fog(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    p = FOG[severity - 1]
    top = x.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    haze = fractal_noise(keys, x.shape[2], x.shape[3], decay=p["decay"], stream=30)
    return ((x + p["thickness"] * haze) * top / (top + p["thickness"])).clamp(0, 1)
