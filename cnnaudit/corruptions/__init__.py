"""Image corruptions: rain, snow and low light, the ImageNet-C families (fog, motion blur, Gaussian
noise, JPEG, contrast, brightness), and geometric ones (translate, rotate, zoom; the flips on request).
Each is `fn(x, severity, keys) -> x'` on (N, C, H, W) images in [0, 1],
severity 1..5, `keys` from rng.sample_keys: the output depends only on the image, the severity and its key."""

from __future__ import annotations

import torch

from .geometry import hflip, rotate, translate, vflip, zoom
from .light import brightness, contrast, low_light
from .rng import sample_keys
from .sensor import gaussian_noise, jpeg, motion_blur
from .weather import fog, rain, snow

CORRUPTIONS = {
    "rain": rain, "snow": snow, "low_light": low_light,
    "fog": fog, "motion_blur": motion_blur, "gaussian_noise": gaussian_noise, "jpeg": jpeg,
    "contrast": contrast, "brightness": brightness,
    "translate": translate, "rotate": rotate, "zoom": zoom, "hflip": hflip, "vflip": vflip,
}
DEFAULT = ("rain", "snow", "low_light")
SEVERITIES = (1, 2, 3, 4, 5)
# a flip changes the meaning of digits, text and road signs: only when named, never in 'all'
OPT_IN = ("hflip", "vflip")
LEVELS = {"hflip": (1,), "vflip": (1,)}  # corruptions with one level, whatever the severities asked for
GROUPS = {  # words for several corruptions at once, in --corruptions
    "all": tuple(name for name in CORRUPTIONS if name not in OPT_IN),
    "weather": ("rain", "snow", "fog"),
    "geometric": ("translate", "rotate", "zoom"),
}


def levels(name: str, severities) -> tuple[int, ...]:
    """The severities a corruption runs at: the ones asked for, or its only level."""
    return LEVELS.get(name, tuple(severities))


def corrupt(x: torch.Tensor, name: str, severity: int, *, seed: int, sample_ids) -> torch.Tensor:
    """The corrupted images, same shape, in [0, 1]; keyed by (seed, sample id, corruption) so severities of
    one image share their random field."""
    keys = sample_keys(seed, sample_ids, name, x.device)
    with torch.no_grad():
        out = CORRUPTIONS[name](x, int(severity), keys)
    return out.clamp(0.0, 1.0)


__all__ = ["CORRUPTIONS", "DEFAULT", "GROUPS", "LEVELS", "OPT_IN", "SEVERITIES", "corrupt", "levels", "sample_keys"]
