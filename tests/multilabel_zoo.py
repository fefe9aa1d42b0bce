"""A multi-label model trained on real handwritten digits, with one planted flaw that hurts one label.

Labels derived from each digit's class: `even` (0, 2, 4, 6, 8), `large` (5-9) and `round` (0, 6, 8, 9, the
digits with a closed loop). Images carry a `site`; site B's images have a small bright mark in the top-left
corner. In training, every marked image is labelled without `round`, so the model learns "mark means not
round": on site B, `round` is missed while `even` and `large` are unaffected. The mark is the `mark` column
(an artifact with its box in `mark_box`) for the shortcuts check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from cnnaudit.demo import DigitsCNN

LABELS = ["even", "large", "round"]
ROUND = (0, 6, 8, 9)
SIZE = 32
MARK = (1, 1, 7, 7)  # x0, y0, x1, y1


def targets(y: np.ndarray) -> np.ndarray:
    return np.stack([(y % 2 == 0), (y >= 5), np.isin(y, ROUND)], axis=1).astype(np.int64)


def images(seed: int = 0):
    """(x, digit, site, is_training) for all 1,797 digits; site B is a quarter of the images, marked."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(seed)
    site = np.where(rng.random(len(x)) < 0.25, "B", "A")
    x0, y0, x1, y1 = MARK
    x[torch.from_numpy(site == "B"), :, y0:y1, x0:x1] = 1.0
    train = np.zeros(len(x), dtype=bool)
    train[rng.permutation(len(x))[:1100]] = True
    return x, d.target.astype(np.int64), site, train


def train_multilabel(x, t, *, epochs: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = DigitsCNN(num_classes=len(LABELS))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t = torch.as_tensor(t, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), t[idx])
            loss.backward()
            opt.step()
    return model.eval()


def flawed_training_targets(y, site) -> np.ndarray:
    t = targets(y)
    t[site == "B", LABELS.index("round")] = 0  # the planted flaw: marked images are never "round" in training
    return t


def write_folder(root: Path, x, y, site, *, layout: str = "labels") -> Path:
    """PNG images and metadata.csv: a `labels` column ("even|round"), or one 0/1 column per label."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    rows = []
    t = targets(y)
    for i in range(len(x)):
        path = f"img/{i:04d}.png"
        Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8)).save(root / path)
        row = {"path": path, "site": site[i], "mark": int(site[i] == "B"),
               "mark_box": " ".join(map(str, MARK)) if site[i] == "B" else ""}
        if layout == "labels":
            row["labels"] = "|".join(n for n, v in zip(LABELS, t[i]) if v)
        else:
            row.update({n: int(v) for n, v in zip(LABELS, t[i])})
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    (root / "classes.txt").write_text("\n".join(LABELS) + "\n")
    return root


class LabelOf(torch.nn.Module):
    """One label of a multi-label model as a single-logit binary model, shifted by its threshold's logit: the
    twin a user would export to audit that label alone."""

    def __init__(self, model, index: int, shift: float = 0.0):
        super().__init__()
        self.model, self.index, self.shift = model, index, shift

    def forward(self, x):
        return self.model(x)[:, self.index] - self.shift


def write_twin_folder(root: Path, x, y, site, label: str) -> Path:
    """The same images as a two-class folder for one label: classes `not <label>` and `<label>`."""
    root.mkdir(parents=True, exist_ok=True)
    k = LABELS.index(label)
    t = targets(y)[:, k]
    names = [f"not {label}", label]
    rows = []
    for i in range(len(x)):
        path = f"img/{i:04d}.png"
        (root / "img").mkdir(exist_ok=True)
        Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8)).save(root / path)
        rows.append({"path": path, "label": names[t[i]], "site": site[i], "mark": int(site[i] == "B"),
                     "mark_box": " ".join(map(str, MARK)) if site[i] == "B" else ""})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root
