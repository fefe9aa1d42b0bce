"""Decode any image file into a float tensor in [0, 1] with the model's channels and size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

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


TRANSPOSED = range(2, 9)  # EXIF orientations 2-8 say how the stored pixels are turned or mirrored; 1 is upright
SWAPS_AXES = (5, 6, 7, 8)  # those stored with height and width exchanged


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (2-8) of an open image, or 1 when it is upright, untagged or the tag is not a
    valid orientation. An EXIF block PIL cannot parse reads as upright, as in image viewers: the pixels are
    still readable."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return int(value) if isinstance(value, int) and value in TRANSPOSED else 1


def decode_image(path: str | Path, *, channels: int, size: tuple[int, int],
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, bool]:
    """(C x H x W tensor in [0, 1], whether values had to be clipped), upright. Raises SkipImage."""
    x, clipped, _ = decode_upright(path, channels=channels, size=size, max_pixels=max_pixels)
    return x, clipped


def decode_upright(path: str | Path, *, channels: int, size: tuple[int, int],
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, bool, int]:
    """(C x H x W tensor in [0, 1], whether values had to be clipped, the EXIF orientation applied: 1 when
    none). A phone photo's pixels are often stored sideways with an orientation tag that every viewer
    applies; the model is audited on the image as people see it. Raises SkipImage."""
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
                orientation = exif_orientation(img)
                arr = _to_array(ImageOps.exif_transpose(img) if orientation != 1 else img)
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
    return x.contiguous(), clipped, orientation


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) upright (after the EXIF orientation, as decode_image returns it) from the header alone, or None
    if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            return (w, h) if exif_orientation(img) in SWAPS_AXES else (h, w)
    except Exception:
        return None
