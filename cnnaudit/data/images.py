"""Decode any image file into a float tensor in [0, 1] with the model's channels and size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, UnidentifiedImageError

# PIL's own default; larger images are skipped as possible decompression bombs.
DEFAULT_MAX_PIXELS = 89_478_485
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a skip record, not a silently grey image


class SkipImage(Exception):
    """This file cannot be audited; the message is the reason shown in the summary and report."""


def _to_array(img: Image.Image) -> np.ndarray:
    """HxWxC float32 in [0, 1] from any PIL mode, keeping 16-bit precision."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None]
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.float32)
        return (arr / (65535.0 if arr.max(initial=0) > 255 else 255.0))[..., None]
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)[..., None]
    if img.mode in ("1", "L", "P;L"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if img.mode == "LA":
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    # RGB, RGBA (alpha dropped, as torchvision's loader does), P, CMYK, YCbCr, LAB, HSV
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def allow_pixels(max_pixels: int) -> None:
    """Let PIL open images up to `max_pixels`. PIL's own bomb limit is a process-wide setting checked when a
    file is opened, before cnnaudit's per-file check could run; it is raised (never lowered) to the audit's
    limit, which cnnaudit then enforces itself on every file."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


def decode_image(path: str | Path, *, channels: int, size: tuple[int, int],
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, bool]:
    """(C x H x W tensor in [0, 1], whether values had to be clipped). Raises SkipImage."""
    allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise SkipImage(f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels "
                                    "(possible decompression bomb; raise --max-pixels to allow it)")
                img.load()
                arr = _to_array(img)
    except SkipImage:
        raise
    except UnidentifiedImageError:
        raise SkipImage("not an image (no decoder recognises the file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipImage(f"possible decompression bomb ({exc}); raise --max-pixels to allow it") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise SkipImage(f"unreadable or truncated image ({str(exc).strip() or type(exc).__name__})") from None
    clipped = bool(arr.size and (arr.min() < 0.0 or arr.max() > 1.0 or not np.isfinite(arr).all()))
    if clipped:
        arr = np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0)
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if x.shape[0] != channels:
        if channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
        else:
            x = x.expand(channels, -1, -1)
    if tuple(x.shape[1:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.clamp(0.0, 1.0)  # bilinear antialiasing overshoots by rounding error only
    return x.contiguous(), clipped


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) from the header alone, or None if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception:
        return None
