"""What a multi-label audit costs against a one-label audit of the same images, with and without sharing.

A ResNet-18 (random weights: speed does not depend on them) with K sigmoid outputs at 64 px, on held-out
digits labelled with K seeded random label sets. Three audits with the same checks (default: corruption on
four corruptions x two severities, shift, subgroups, label issues; no attacks, which cost one audit per
label by design):

1. one label: that label's output exported as its own one-logit model, audited on the same images as a
   two-class folder (the single-label audit a user would otherwise run K times);
2. K labels, nothing shared (cnnaudit.multilabel.audit.SHARE off): what K separate audits would cost;
3. K labels, shared forward passes and decoded batches (the default).

Prints each wall time and the ratios (3) / (1) and (2) / (1), and the forward passes and decoded images the
sharing saved; then one attacked label against all K attacked (adversarial fast preset) to show the attacks'
cost is per label. Target: (3) / (1) well under K.

    python benchmarks/bench_multilabel.py [--labels 14] [--images 200] [--size 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

import cnnaudit
from cnnaudit.multilabel import audit as ml_audit


class Head(torch.nn.Module):
    def __init__(self, inner, index: int):
        super().__init__()
        self.inner, self.index = inner, index

    def forward(self, x):
        return self.inner(x)[:, self.index]


def build(k: int, n: int, size: int, root: Path):
    from sklearn.datasets import load_digits
    from torchvision.models import resnet18
    torch.manual_seed(0)
    model = resnet18(num_classes=k).eval()
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(0)
    t = (rng.random((n, k)) < 0.3).astype(int)
    names = [f"finding{i:02d}" for i in range(k)]
    for folder in ("ml", "one"):
        (root / folder / "img").mkdir(parents=True, exist_ok=True)
    rows, one = [], []
    for i in range(n):
        path = f"img/{i:04d}.png"
        img = Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8)).convert("RGB")
        img.save(root / "ml" / path)
        img.save(root / "one" / path)
        site = "AB"[i % 2]
        rows.append({"path": path, "labels": "|".join(nm for nm, v in zip(names, t[i]) if v), "site": site})
        one.append({"path": path, "label": names[0] if t[i, 0] else f"not {names[0]}", "site": site})
    pd.DataFrame(rows).to_csv(root / "ml" / "metadata.csv", index=False)
    (root / "ml" / "classes.txt").write_text("\n".join(names) + "\n")
    pd.DataFrame(one).to_csv(root / "one" / "metadata.csv", index=False)
    (root / "one" / "classes.txt").write_text(f"not {names[0]}\n{names[0]}\n")
    return model, names


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=14)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="cnnaudit-bench-ml-"))
    model, names = build(args.labels, args.images, args.size, root)
    checks = ["corruption", "shift", "subgroups", "label_issues"]
    opts = dict(seed=0, quiet=True, checks=checks,
                corruption={"corruptions": ["fog", "low_light", "gaussian_noise", "jpeg"], "severities": [2, 4]})
    print(f"ResNet-18, {args.labels} labels, {args.images} images at {args.size} px, checks {', '.join(checks)}, "
          f"{torch.get_num_threads()} threads")
    t1, _ = timed(lambda: cnnaudit.audit(Head(model, 0), str(root / "one"), **opts))
    ml_audit.SHARE = False
    t_apart, _ = timed(lambda: cnnaudit.audit(model, str(root / "ml"), **opts))
    ml_audit.SHARE = True
    t_shared, r = timed(lambda: cnnaudit.audit(model, str(root / "ml"), **opts))
    shared = r.summary["multilabel"]["shared_passes"]
    print("| audit | wall s | / one label |\n|---|---:|---:|")
    print(f"| one label (its own one-logit model) | {t1:.1f} | 1.00 |")
    print(f"| {args.labels} labels, nothing shared | {t_apart:.1f} | {t_apart / t1:.2f} |")
    print(f"| {args.labels} labels, shared (default) | {t_shared:.1f} | {t_shared / t1:.2f} |")
    print(f"shared: {shared['forward_hits']} forward passes served from the cache, {shared['forward_misses']} run; "
          f"{shared['images_reused']} images reused, {shared['images_decoded']} decoded")
    adv = dict(seed=0, quiet=True, checks=["adversarial"], adversarial={"attack_strength": "fast", "norms": ["linf"],
                                                                        "eps": {"linf": [2 / 255]}})
    a1, _ = timed(lambda: cnnaudit.audit(model, str(root / "ml"), attack_labels=[names[0]], **adv))
    ak, _ = timed(lambda: cnnaudit.audit(model, str(root / "ml"), **adv))
    print(f"attacks (fast, L-inf 2/255): --labels {names[0]} {a1:.1f} s, all {args.labels} labels {ak:.1f} s "
          f"({ak / a1:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
