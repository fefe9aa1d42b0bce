"""Shared benchmark workload: the demo's digits CNN and an audit split written to disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cnnaudit.demo import digits_images, train_model, write_image_folder


def digits_workload(n_eval: int, *, epochs: int = 12, root: Path | None = None):
    """(eager model, data folder) with `n_eval` held-out digits; trains in a few seconds."""
    x, y, meta = digits_images(seed=0)
    perm = np.random.default_rng(0).permutation(len(y))
    train, held = perm[:1100], np.sort(perm[1100:1100 + n_eval])
    model = train_model(x[train], y[train], epochs=epochs)
    root = Path(root or tempfile.mkdtemp(prefix="cnnaudit-bench-")) / "data"
    write_image_folder(root, x[held], y[held], meta.iloc[held].reset_index(drop=True), [str(i) for i in range(10)])
    return model, root
