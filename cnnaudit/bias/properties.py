"""Per-image properties for automatic slices and duplicate detection, computed on the decoded batch.

dHash (difference hash, Krawetz 2013): a 9 x 8 greyscale thumbnail, one bit per horizontal neighbour
comparison; near-duplicates differ in a few bits. Written by hand (10 lines) rather than adding
imagehash, which would also need the files decoded a second time.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..corruptions.ops import luminance

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def image_properties(x: torch.Tensor) -> dict[str, np.ndarray]:
    """brightness (mean luminance), contrast (its std), sharpness (variance of the Laplacian, x 100),
    dhash (16 hex digits) and pixel_hash (exact content) per image of x (N, C, H, W) in [0, 1]."""
    x = x.float().cpu()
    grey = luminance(x)
    lap = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), LAPLACIAN.view(1, 1, 3, 3))
    thumb = F.interpolate(grey, size=(8, 9), mode="area")[:, 0]
    bits = (thumb[:, :, 1:] > thumb[:, :, :-1]).flatten(1).numpy()
    dhash = [f"{int(''.join('1' if b else '0' for b in row), 2):016x}" for row in bits]
    pixel_hash = [hashlib.sha256((img.numpy() * 65535).round().astype(np.uint16).tobytes()).hexdigest()[:16]
                  for img in x]
    return {"brightness": grey.mean(dim=(1, 2, 3)).numpy(), "contrast": grey.std(dim=(1, 2, 3)).numpy(),
            "sharpness": lap.var(dim=(1, 2, 3)).numpy() * 100, "dhash": np.array(dhash),
            "pixel_hash": np.array(pixel_hash)}


def grey_thumbnails(x: torch.Tensor, side: int) -> np.ndarray:
    """(N, side, side) uint8 greyscale thumbnails (channel mean, area-averaged) of x (N, C, H, W) in [0, 1]."""
    grey = x.float().cpu().mean(dim=1, keepdim=True)
    return (F.interpolate(grey, size=(side, side), mode="area")[:, 0] * 255).round().to(torch.uint8).numpy()


def thumbnails(x: torch.Tensor) -> np.ndarray:
    """(N, 256) uint8 16 x 16 greyscale thumbnails: the check that turns a dHash match into a near duplicate
    (on small images such as 32 px digits, many different images share a 64-bit dHash)."""
    return grey_thumbnails(x, 16).reshape(len(x), -1)
