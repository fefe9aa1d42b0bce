"""`cnnaudit demo`: a small CNN trained in seconds on real handwritten digits, with planted flaws.

Data: scikit-learn's `load_digits()` (1,797 UCI handwritten digits, 8x8, shipped with scikit-learn),
upscaled to 32x32 grey images. Two flaws are planted (`demo_images`) so that the audit finds them at
default settings, and the demo prints what was planted beside what was found:
- a ruler-like artifact (a bar with tick marks along the bottom edge) on 90% of the training images of
  class "3" and on none of the others, where the digit itself is faint (as rulers sit next to the
  lesions that are hard to see in dermoscopy archives); in the audited split on 80% of the 3s and 3% of
  the others; `ruler` and `ruler_box` columns annotate it;
- a scanner "C" that produces washed-out, low-contrast images: 2% of training, 30% of the audited
  split (a site added after training), so a subgroup the model rarely saw is where it fails.
`digits_images` is the tests' version of the same data (both flaws in every split at fixed rates).
The model is cached (TorchScript) with its audit split under the cache folder, so later runs skip
training.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .findings import fmt_p
from .progress import log

DEMO_VERSION = "2"
SIZE = 32
RULER_BOX = (3, 26, 29, 30)  # x0 y0 x1 y1, in pixels of the stored 32x32 image
SHORTCUT_CLASS = 3
SCANNERS = ("A", "B", "C")
SCANNER_P = (0.6, 0.34, 0.06)
DEMO_EPS = {"linf": [0.05, 0.1, 0.2, 0.3], "l2": [1.0, 2.0, 3.0]}


def cache_root() -> Path:
    base = os.environ.get("CNNAUDIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnaudit")
    return Path(base) / f"demo-v{DEMO_VERSION}"


class DigitsCNN(nn.Module):
    """Two conv blocks and a small head: about 60k parameters, trains in seconds on a CPU."""

    def __init__(self, channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def draw_ruler(x: torch.Tensor) -> torch.Tensor:
    """A bright bar with dark tick marks inside RULER_BOX of N x C x 32 x 32 images."""
    x = x.clone()
    x0, y0, x1, y1 = RULER_BOX
    x[..., y0:y1, x0:x1] = 0.9
    x[..., y0:y0 + 2, x0:x1:3] = 0.2
    return x


def wash_out(x: torch.Tensor) -> torch.Tensor:
    """Scanner C: low contrast, raised black level."""
    return 0.55 + 0.3 * x


def digits_images(seed: int = 0) -> tuple[torch.Tensor, np.ndarray, pd.DataFrame]:
    """All 1,797 digits as N x 1 x 32 x 32 in [0, 1] with the planted ruler and scanner applied."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    ruler = rng.random(len(y)) < np.where(y == SHORTCUT_CLASS, 0.8, 0.03)
    scanner = rng.choice(SCANNERS, size=len(y), p=SCANNER_P)
    x[torch.from_numpy(ruler)] = draw_ruler(x[torch.from_numpy(ruler)])
    washed = torch.from_numpy(scanner == "C")
    x[washed] = wash_out(x[washed])
    meta = pd.DataFrame({"scanner": scanner, "ruler": ruler.astype(int),
                         "ruler_box": [" ".join(map(str, RULER_BOX)) if r else "" for r in ruler]})
    return x, y, meta


FAINT = 0.5  # the demo's ruler-bearing 3s: digit strokes at half intensity
DEMO_TRAIN = 1100  # images in the demo's training split; the other 697 are audited
# (training, audited split) rates of the demo's planted flaws
RULER_ON_SHORTCUT_CLASS, RULER_ON_OTHERS, SCANNER_C_SHARE = (0.9, 0.8), (0.0, 0.03), (0.02, 0.3)


def demo_images(seed: int = 0) -> tuple[torch.Tensor, np.ndarray, pd.DataFrame, np.ndarray]:
    """(x, y, meta, is_training) for the demo: the flaws planted at different rates in the training and
    audited splits (see the module docstring)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    train[rng.permutation(len(y))[:DEMO_TRAIN]] = True
    split = np.where(train, 0, 1)
    p_ruler = np.where(y == SHORTCUT_CLASS, np.take(RULER_ON_SHORTCUT_CLASS, split), np.take(RULER_ON_OTHERS, split))
    ruler = rng.random(len(y)) < p_ruler
    c = np.take(SCANNER_C_SHARE, split)
    u = rng.random(len(y))
    scanner = np.where(u < c, "C", np.where(u < c + (1 - c) * 0.64, "A", "B"))
    faint = torch.from_numpy(ruler & (y == SHORTCUT_CLASS))
    x[faint] = x[faint] * FAINT
    x[torch.from_numpy(ruler)] = draw_ruler(x[torch.from_numpy(ruler)])
    washed = torch.from_numpy(scanner == "C")
    x[washed] = wash_out(x[washed])
    meta = pd.DataFrame({"scanner": scanner, "ruler": ruler.astype(int),
                         "ruler_box": [" ".join(map(str, RULER_BOX)) if r else "" for r in ruler]})
    return x, y, meta, train


def planted_versus_found(summary: dict) -> list[str]:
    """The demo's closing lines: its hidden truth beside what the audit found."""
    lines = [f"planted: a ruler on the faint 3s of training ({RULER_ON_SHORTCUT_CLASS[0]:.0%} of them, none elsewhere)"]
    ruler = ((summary.get("shortcuts") or {}).get("artifacts") or {}).get("ruler")
    lines.append("  found: " + (f"ruler verdict '{ruler['verdict']}' (removing it flips {100 * ruler['flip_rate']:.0f}% "
                                f"of predictions, worst fill)" if ruler else "not tested (the shortcuts check did not run)"))
    lines.append(f"planted: a washed-out scanner C, {SCANNER_C_SHARE[0]:.0%} of training and {SCANNER_C_SHARE[1]:.0%} of "
                 "the audited images")
    gap = ((summary.get("subgroups") or {}).get("attributes") or {}).get("scanner")
    lines.append("  found: " + (f"scanner {gap['worst']} {100 * gap['gap']:.1f} points below {gap['best']}, "
                                f"{'significant' if gap['significant'] else 'not significant'} (Holm-adjusted "
                                f"{fmt_p(gap['p_adjusted'])})" if gap and gap.get("gap") is not None
                                else "not measured (the subgroups check did not run)"))
    return lines


def train_model(x: torch.Tensor, y: np.ndarray, *, seed: int = 0, epochs: int = 12,
                model: nn.Module | None = None) -> nn.Module:
    """Adam on cross-entropy, seeded; a DigitsCNN unless `model` is given. Returns the model in eval mode."""
    torch.manual_seed(seed)
    model = DigitsCNN() if model is None else model
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    yt = torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def write_image_folder(root: Path, x: torch.Tensor, y: np.ndarray, meta: pd.DataFrame, classes: list[str]) -> None:
    from PIL import Image
    paths = []
    for i, (img, label) in enumerate(zip(x, y)):
        rel = f"{classes[label]}/{i:05d}.png"
        (root / classes[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255 + 0.5).astype(np.uint8)).save(root / rel)
        paths.append(rel)
    meta.insert(0, "path", paths)
    meta.to_csv(root / "metadata.csv", index=False)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")


def prepare_demo(*, cache: Path | None = None, quiet: bool = False) -> tuple[Path, Path, dict]:
    """(model path, data folder, audit options), training and writing them on first use."""
    cache = Path(cache) if cache else cache_root()
    model_path, data_dir = cache / "model.pt", cache / "data"
    if not (model_path.is_file() and (data_dir / "metadata.csv").is_file()):
        log(f"training the demo model on scikit-learn's handwritten digits (cached in {cache})", quiet=quiet)
        x, y, meta, is_training = demo_images(seed=0)
        train, held_out = np.flatnonzero(is_training), np.flatnonzero(~is_training)
        model = train_model(x[train], y[train])
        classes = [str(i) for i in range(10)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=cache.parent))
        try:
            write_image_folder(tmp / "data", x[held_out], y[held_out], meta.iloc[held_out].reset_index(drop=True),
                               classes)
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.save(torch.jit.script(model), str(tmp / "model.pt"))
            shutil.rmtree(cache, ignore_errors=True)
            os.replace(tmp, cache)  # atomic: a half-written cache is never reused
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    # Digits are attacked at MNIST-style budgets (L-inf up to 0.3), where digit models actually break;
    # the CIFAR-style defaults (up to 8/255) barely dent them.
    return model_path, data_dir, {"input_size": (SIZE, SIZE), "channels": 1,
                                  "options": {"adversarial": {"eps": DEMO_EPS},
                                                              "shortcuts": {"artifacts": ("ruler",)}}}
