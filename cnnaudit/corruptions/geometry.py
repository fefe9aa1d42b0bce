"""Geometric corruptions: translate, rotate, zoom, and the opt-in flips. Does moving the object change the
answer? Azulay & Weiss (2019, "Why do deep convolutional networks generalize so poorly to small image
transformations?") found one-pixel shifts change ImageNet CNNs' predictions on up to 30% of images.

Severities (README table): translate shifts by 3, 6, 10, 15, 20% of the side (at 32 px: 1, 2, 3, 5, 6 px;
at 224 px: 7 to 45 px), rotate by 5, 10, 15, 25, 35 degrees, zoom by a factor of 1.1, 1.2, 1.3, 1.45, 1.6.
The direction is drawn per sample from its key (translate: an angle in [0, 360); rotate: clockwise or
counter-clockwise; zoom: in or out), so an image moves the same way at every severity and in every
batch or process. The flips have one level.

Translation is by whole pixels (rounded), so content moves exactly, without resampling. Rotation and
zoom resample bilinearly (torch's affine_grid/grid_sample, which is what torchvision's own affine
transforms use); zooming out by up to 1.6 is not anti-aliased. The border that an image's content
uncovers is filled with the median of its own outermost ring of pixels, per channel: black for digits
on black, the wall's colour for a photo of a wall, so the fill does not add a frame the data never has.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .rng import uniform

TRANSLATE = [0.03, 0.06, 0.10, 0.15, 0.20]  # shift, share of the side
ROTATE = [5.0, 10.0, 15.0, 25.0, 35.0]  # degrees
ZOOM = [1.1, 1.2, 1.3, 1.45, 1.6]  # zoom in magnifies by the factor, zoom out shrinks by it


def border_fill(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the median of the outermost ring of pixels: (N, C, 1, 1)."""
    ring = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    return ring.median(dim=-1).values[..., None, None]


def shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's content moved by whole pixels: dx columns right and dy rows down (negative: left, up);
    the uncovered border is `fill` (default: border_fill)."""
    n, _, h, w = x.shape
    fill = border_fill(x) if fill is None else fill
    dx, dy = dx.to(x.device, torch.long), dy.to(x.device, torch.long)
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # the source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]
    valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])[:, None]
    index = torch.arange(n, device=x.device)[:, None, None]
    moved = x[index, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]  # N, H, W, C
    return torch.where(valid, moved.permute(0, 3, 1, 2), fill)


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling where output pixel u reads input theta @ u (normalized coordinates); what falls
    outside the image is `fill`, blended at the edge by the share of the sample that fell outside."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return out + (1.0 - inside) * fill


def rotate_by(x: torch.Tensor, degrees: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Each image rotated by its angle about the centre (positive: counter-clockwise as displayed). The
    rotation is in pixels, not in normalized coordinates, so a non-square image is not sheared. An angle
    of 0 returns the image unchanged."""
    n, _, h, w = x.shape
    fill = border_fill(x) if fill is None else fill
    a = torch.deg2rad(degrees.to(x.device, torch.float64))
    c, s = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(c)
    # the input read by each output pixel (rows grow downwards), in pixel units rescaled to affine_grid's [-1, 1]
    theta = torch.stack([torch.stack([c, -s * h / w, zero], -1), torch.stack([s * w / h, c, zero], -1)], 1)
    out = _affine(x, theta, fill)
    return torch.where((degrees.to(x.device) == 0)[:, None, None, None], x, out)


def zoom_by(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Each image scaled about its centre: factor > 1 zooms in (the centre magnified, the edges cropped),
    < 1 zooms out (the image shrunk, the border filled). A factor of 1 returns the image unchanged."""
    fill = border_fill(x) if fill is None else fill
    inv = 1.0 / factor.to(x.device, torch.float64)
    zero = torch.zeros_like(inv)
    theta = torch.stack([torch.stack([inv, zero, zero], -1), torch.stack([zero, inv, zero], -1)], 1)
    out = _affine(x, theta, fill)
    return torch.where((factor.to(x.device) == 1)[:, None, None, None], x, out)


def translate(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    _, _, h, w = x.shape
    angle = uniform(keys, (1,), stream=0)[:, 0].double() * 2 * math.pi
    share = TRANSLATE[severity - 1]
    dx = torch.round(share * w * torch.cos(angle)).long()
    dy = torch.round(share * h * torch.sin(angle)).long()
    return shift(x, dx, dy)


def rotate(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    sign = torch.where(uniform(keys, (1,), stream=0)[:, 0] < 0.5, -1.0, 1.0)
    return rotate_by(x, sign * ROTATE[severity - 1])


def zoom(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    f = ZOOM[severity - 1]
    factor = torch.where(uniform(keys, (1,), stream=0)[:, 0] < 0.5, 1.0 / f, f)
    return zoom_by(x, factor)


def hflip(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def vflip(x: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)
