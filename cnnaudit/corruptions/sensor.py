"""Gaussian noise, motion blur and JPEG: what the camera and the pipeline do to a picture."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from .ops import line_blur
from .rng import normal, uniform

GAUSSIAN_NOISE = [0.08, 0.12, 0.18, 0.26, 0.38]  # ImageNet-C: sigma in [0, 1] pixel units
MOTION_BLUR = [0.04, 0.06, 0.08, 0.11, 0.15]  # blur length, fraction of the shorter side (ImageNet-C: 10-20 px at 224)
JPEG_QUALITY = [25, 18, 15, 10, 7]  # ImageNet-C


def gaussian_noise(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    return (x + GAUSSIAN_NOISE[severity - 1] * normal(keys, tuple(x.shape[1:]), stream=50)).clamp(0, 1)


def motion_blur(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    """Camera shake along a straight line at a per-image angle (any direction), centred on the pixel."""
    angle = uniform(keys, (1,), stream=60)[:, 0] * math.pi
    return line_blur(x, MOTION_BLUR[severity - 1] * min(x.shape[2:]), angle).clamp(0, 1)


def jpeg(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    """Encode and decode with libjpeg through Pillow (on the CPU, one image at a time as the codec works:
    deterministic, and the codec the images met in the wild; torchvision's codec is deprecated)."""
    quality = JPEG_QUALITY[severity - 1]
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=quality)
        dec = np.asarray(Image.open(buf), dtype=np.float32) / 255
        out.append(dec[..., None] if dec.ndim == 2 else dec)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype)
