"""Batched image operations the corruptions are built from. Images are (N, C, H, W) in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .rng import uniform


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) Rec. 601 luma; a grey image is its own luminance."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders. Two 1-D passes instead of torchvision's 2-D kernel:
    at 224 px and sigma 2.5 that is 34 instead of 289 multiply-adds per pixel."""
    if sigma_px < 0.2:
        return x
    r = min(max(1, math.ceil(3 * sigma_px)), x.shape[2] - 1, x.shape[3] - 1)  # reflect padding needs r < size
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def line_kernels(length_px: float, angle: torch.Tensor) -> torch.Tensor:
    """(N, K, K) anti-aliased centred segments of the given length at each image's angle (radians,
    0 = vertical): weight 1 - distance to the segment, in pixels, clipped at 0."""
    r = int(math.ceil(length_px / 2)) + 1
    t = torch.arange(-r, r + 1, device=angle.device, dtype=torch.float32)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    dx, dy = torch.sin(angle).view(-1, 1, 1), torch.cos(angle).view(-1, 1, 1)
    along = (xx * dx + yy * dy).clamp(-length_px / 2, length_px / 2)
    dist = torch.sqrt((xx - along * dx) ** 2 + (yy - along * dy) ** 2)
    return (1 - dist).clamp(min=0)


def convolve(x: torch.Tensor, kernels: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """Each image convolved with its own (K, K) kernel, through the FFT: the cost does not grow with
    the kernel, where a grouped conv2d with a 35 x 35 motion kernel at 224 px costs an order of magnitude more."""
    n, c, h, w = x.shape
    r = kernels.shape[-1] // 2
    mode = {"zeros": "constant", "reflect": "reflect" if r < min(h, w) else "replicate"}[padding]
    xp = F.pad(x, (r, r, r, r), mode=mode)
    ph, pw = xp.shape[-2:]
    k = torch.zeros(n, 1, ph, pw, device=x.device, dtype=torch.float32)
    k[:, 0, : 2 * r + 1, : 2 * r + 1] = kernels
    k = torch.roll(k, shifts=(-r, -r), dims=(2, 3))  # centre the kernel on the origin
    out = torch.fft.irfft2(torch.fft.rfft2(xp.float()) * torch.fft.rfft2(k), s=(ph, pw))
    return out[:, :, r: r + h, r: r + w].to(x.dtype)


def line_blur(x: torch.Tensor, length_px: float, angle: torch.Tensor, *, total: bool = False,
              padding: str = "reflect") -> torch.Tensor:
    """Convolution with a centred segment per image: averaged (motion blur) or, with total=True,
    summed along the segment (a point becomes a streak of intensity ~1)."""
    if length_px < 1:
        return x
    kernels = line_kernels(length_px, angle)
    norm = kernels.sum(dim=(1, 2), keepdim=True) if not total else kernels.amax(dim=(1, 2), keepdim=True)
    return convolve(x, kernels / norm, padding)


def fractal_noise(keys: torch.Tensor, h: int, w: int, *, decay: float, stream: int, octaves: int = 6) -> torch.Tensor:
    """(N, 1, H, W) value noise in [0, 1]: octaves of upsampled random grids, each 1/decay as strong as
    the previous (the role of ImageNet-C's plasma fractal 'wibbledecay')."""
    out = torch.zeros(len(keys), 1, h, w, device=keys.device)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        g = 2 ** (o + 1) + 1
        grid = uniform(keys, (1, g, g), stream * 16 + o)
        out = out + amp * F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
        total += amp
        amp /= decay
    out = out / total
    lo = out.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
    hi = out.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    return (out - lo) / (hi - lo).clamp_min(1e-6)


def screen(x: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """Screen blend: brightens like light added on top, never leaves [0, 1]."""
    return 1 - (1 - x) * (1 - layer.clamp(0, 1))
