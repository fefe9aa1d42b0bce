"""Remove an artifact by filling its region from the surroundings, three ways, so that no single fill
(and its own look) can be the cause of a flip. Images (N, C, H, W) in [0, 1], masks (N, 1, H, W) bool;
pixels outside the mask are never changed.

- `ring_mean`: the mean colour of a 2-pixel ring around the region (flat patch);
- `diffuse`: harmonic inpainting: the region relaxes to the average of its neighbours (Jacobi
  iterations of the Laplace equation with the surroundings as boundary: smooth, no new texture);
- `blur`: normalised convolution: a wide Gaussian average of the unmasked pixels only.
Written by hand: OpenCV's inpainting would add a dependency and work one image at a time on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FILLS = ("ring_mean", "diffuse", "blur")


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(mask.float(), 2 * r + 1, stride=1, padding=r) > 0.5


def ring_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ring = (_dilate(mask, 2) & ~mask).float()
    colour = (x * ring).sum(dim=(2, 3), keepdim=True) / ring.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    return torch.where(mask, colour.expand_as(x), x)


def diffuse(x: torch.Tensor, mask: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    out = ring_mean(x, mask)
    kernel = torch.tensor([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], device=x.device, dtype=x.dtype)
    kernel = kernel.view(1, 1, 3, 3).expand(x.shape[1], 1, 3, 3)
    for _ in range(iterations):
        avg = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        out = torch.where(mask, avg, x)
    return out


def blur(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    from ..corruptions.ops import gaussian_blur
    keep = (~mask).float()
    sigma = max(1.0, 0.1 * min(x.shape[2:]))
    num = gaussian_blur(x * keep, sigma)
    den = gaussian_blur(keep.expand_as(x), sigma).clamp_min(1e-4)
    return torch.where(mask, (num / den).clamp(0, 1), x)


def fill(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    out = {"ring_mean": ring_mean, "diffuse": diffuse, "blur": blur}[how](x, mask.expand(-1, 1, -1, -1))
    return out.clamp(0, 1)
