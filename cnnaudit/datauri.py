"""Pixels to inline `data:` URIs, so the report is one file that makes no network requests."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image


MAX_SIDE = 512  # no image in the report is larger on either side, whatever the input size or aspect ratio


def _shrunk(x: torch.Tensor, side: int) -> torch.Tensor:
    """`x` shrunk (area) to `side` pixels on its longer edge if it is longer, aspect kept down to 1 pixel."""
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
    return torch.nn.functional.interpolate(x[None].float(), size=size, mode="area")[0]


def thumbnail_uri(x: torch.Tensor, side: int = 64) -> str:
    """A small PNG data URI for strips of examples: larger images are shrunk (area) to `side` pixels on
    their longer edge, and small ones are not enlarged past it, so a strip costs a few KB per image at any
    input size or aspect ratio (the report's size budget)."""
    return to_data_uri(_shrunk(x, side), min_side=min(side, 48), max_side=side)


def to_data_uri(x: torch.Tensor, min_side: int = 96, max_side: int = MAX_SIDE) -> str:
    """A C x H x W tensor in [0, 1] as a PNG data URI, upscaled (nearest) so small inputs stay visible, with
    neither side over `max_side`: the upscale stops there, and a longer image is shrunk (area) to it. (A
    2 x 3000 input upscaled until its short side was 96 pixels made a 144,000 pixel wide PNG.)"""
    x = _shrunk(x, max_side)
    arr = (x.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0)))
    scale = min(max(1, int(np.ceil(min_side / min(img.size)))), max(1, max_side // max(img.size)))
    if scale > 1:
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    # zlib level 3 without `optimize`: several times faster than optimize=True for a few % more bytes, and
    # encoding 224 px galleries was a visible share of a report's time (benchmarks/bench_audit.py)
    img.save(buf, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def amplify(delta: torch.Tensor) -> torch.Tensor:
    """A perturbation made visible: scaled to fill [0, 1] around mid-grey."""
    peak = delta.abs().max().clamp_min(1e-12)
    return (0.5 + 0.5 * delta / peak).clamp(0, 1)
