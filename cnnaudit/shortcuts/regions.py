"""Artifact regions as boolean masks at the model's input size.

`NAME_box` is "x0 y0 x1 y1" in pixels of the stored image (x1, y1 exclusive); `NAME_mask` is a path inside
DATA to a binary mask image (non-zero = artifact). Both are resized to the model's input the way the
image was, so the region covers the same content, by coverage: an input pixel belongs to the region
when any part of it overlaps the artifact. (Keeping only pixels whose centre lies inside lost a 5 px
ruler on a 256 px image audited at 32 px entirely, and the audit then found nothing to remove.)
`control_mask` gives the same region moved off the artifact: what removing *some* region of that size
does, which the artifact's own removal must clearly beat.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import AuditError


def parse_box(text, column: str, path: str) -> tuple[float, float, float, float] | None:
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in str(text).replace(",", " ").split())
    except ValueError:
        raise AuditError(f"metadata column {column!r} has {text!r} for {path!r}; write a box as 'x0 y0 x1 y1' "
                         "in pixels of the stored image.") from None
    if not (x1 > x0 and y1 > y0):
        raise AuditError(f"metadata column {column!r} has an empty box {text!r} for {path!r}; need x1 > x0 and y1 > y0.")
    return x0, y0, x1, y1


def box_mask(box, stored_hw, input_hw) -> torch.Tensor:
    """(1, H, W) bool: pixels of the model input whose footprint overlaps the box (empty if the box lies
    outside the image)."""
    (sh, sw), (h, w) = stored_hw, input_hw
    x0, y0, x1, y1 = box
    ys, xs = torch.arange(h) * sh / h, torch.arange(w) * sw / w  # each pixel covers [lo, lo + size)
    rows = (ys < y1) & (ys + sh / h > y0)
    cols = (xs < x1) & (xs + sw / w > x0)
    return (rows[:, None] & cols[None, :])[None]


def file_mask(path, input_hw, max_pixels: int) -> torch.Tensor:
    from ..data.images import allow_pixels
    allow_pixels(max_pixels)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise AuditError(f"artifact mask {str(path)!r} has {w}x{h} pixels, over --max-pixels {max_pixels}; "
                                 "give a smaller mask or raise --max-pixels.")
            m = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) > 0).float()
    except AuditError:
        raise
    except Exception as exc:
        raise AuditError(f"artifact mask {str(path)!r} could not be read ({exc}); give a binary image inside DATA.") from None
    # adaptive max pooling: an input pixel is in the region when any mask pixel under it is (up- or downscaling)
    return F.adaptive_max_pool2d(m[None, None], tuple(input_hw))[0] > 0.5


def control_mask(mask: torch.Tensor, seed: int, tries: int = 200) -> torch.Tensor | None:
    """The region `mask` (1, H, W) moved by a seeded offset to where its bounding box lies inside the image
    and clear of the artifact's own bounding box; None if no such place exists (the artifact spans the
    image)."""
    ys, xs = mask[0].nonzero(as_tuple=True)
    if not len(ys):
        return None
    h, w = mask.shape[1:]
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    g = torch.Generator().manual_seed(seed)
    for _ in range(tries):
        dy = int(torch.randint(-top, h - bottom + 1, (), generator=g))
        dx = int(torch.randint(-left, w - right + 1, (), generator=g))
        clear = top + dy >= bottom or bottom + dy <= top or left + dx >= right or right + dx <= left
        if clear:
            return torch.roll(mask, shifts=(dy, dx), dims=(1, 2))  # inside the image: nothing wraps
    return None
