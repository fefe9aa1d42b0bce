"""Stream a dataset through the model in batches; memory stays one batch of pixels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .dataset import Dataset
from .images import DEFAULT_MAX_PIXELS, SkipImage, decode_upright


@dataclass
class Batch:
    sample_ids: np.ndarray
    x: torch.Tensor  # N x C x H x W in [0, 1]
    y: torch.Tensor  # N labels
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (sample_id, reason)
    clipped: list[int] = field(default_factory=list)  # sample ids whose pixel values were clipped to [0, 1]
    exif_orientation: dict[int, int] = field(default_factory=dict)  # sample id -> EXIF orientation (2-8) applied


def iter_batches(dataset: Dataset, sample_ids, *, channels: int, size: tuple[int, int], batch_size: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 2) -> Iterator[Batch]:
    """Decode `sample_ids` in order. PIL releases the GIL while decoding, so threads overlap files."""
    table = dataset.table.set_index("sample_id")
    sample_ids = list(sample_ids)

    def load(sid):
        try:
            return decode_upright(dataset.abspath(table.at[sid, "path"]), channels=channels, size=size,
                                max_pixels=max_pixels)
        except SkipImage as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(sample_ids), batch_size):
            chunk = sample_ids[start:start + batch_size]
            ok_ids, xs, skipped, clipped, oriented = [], [], [], [], {}
            for sid, result in zip(chunk, pool.map(load, chunk)):
                if isinstance(result, str):
                    skipped.append((int(sid), result))
                    continue
                x, was_clipped, orientation = result
                ok_ids.append(int(sid))
                xs.append(x)
                if was_clipped:
                    clipped.append(int(sid))
                if orientation != 1:
                    oriented[int(sid)] = orientation
            ids = np.asarray(ok_ids, dtype=np.int64)
            x = torch.stack(xs) if xs else torch.empty(0, channels, *size)
            y = torch.as_tensor(table.loc[ids, "label"].to_numpy(copy=True) if len(ids) else [], dtype=torch.long)
            yield Batch(ids, x, y, skipped, clipped, oriented)
