"""Artifact regions as boolean masks at the model's input size.

`NAME_box` is "x0 y0 x1 y1" in pixels of the stored image (x1, y1 exclusive); `NAME_mask` is a path inside
DATA to a binary mask image (non-zero = artifact). Both are resized to the model's input the way the
image was, so the region covers the same content.
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
    """(1, H, W) bool: pixels of the model input whose centres fall inside the scaled box."""
    (sh, sw), (h, w) = stored_hw, input_hw
    x0, y0, x1, y1 = box
    ys = (torch.arange(h) + 0.5) * sh / h
    xs = (torch.arange(w) + 0.5) * sw / w
    inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return inside[None]


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
    return F.interpolate(m[None, None], size=tuple(input_hw), mode="nearest")[0] > 0.5
