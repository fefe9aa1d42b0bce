"""The report's size budget: report.html at 1,000 and 10,000 images (every check; FGSM only, so the run
takes minutes on 2 cores), against the budget of 10 MB at 10,000 images. Images in the report are capped
(finding strips, galleries, the explorer's row limit), so its size should barely grow with the data.

    python benchmarks/bench_report_size.py [--sizes 1000,10000]

Digits are repeated with a one-pixel seeded shift per copy to reach 10,000 distinct files; `--size 224`
upsamples them, where thumbnails cost most."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnaudit  # noqa: E402
from cnnaudit.demo import digits_images, train_model, write_image_folder  # noqa: E402

BUDGET_MB = 10.0
CHECKS = ["adversarial", "corruption", "subgroups"]  # the shortcuts check's boxes are drawn at 32 px


class Downsized(torch.nn.Module):
    """The 32 px digits CNN behind an area downsampling, so that it takes larger images."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.nn.functional.interpolate(x, size=(32, 32), mode="area"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32)")
    args = parser.parse_args()
    x, y, meta = digits_images(seed=0)
    model = train_model(x[:1100], y[:1100], epochs=6)
    rng = np.random.default_rng(0)
    for n in [int(v) for v in args.sizes.split(",")]:
        idx = rng.integers(1100, len(y), size=n)
        xs = torch.stack([torch.roll(x[i], shifts=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), dims=(1, 2))
                          for i in idx])
        if args.size != 32:
            xs = torch.nn.functional.interpolate(xs, size=(args.size, args.size), mode="bilinear", align_corners=False)
        root = Path(tempfile.mkdtemp(prefix="cnnaudit-size-")) / "data"
        write_image_folder(root, xs, y[idx], meta.iloc[idx].reset_index(drop=True), [str(i) for i in range(10)])
        t = time.perf_counter()
        audited = model if args.size == 32 else Downsized(model)
        result = cnnaudit.audit(audited, root, input_size=(args.size, args.size), channels=1, checks=CHECKS,
                                adversarial={"attacks": ["fgsm"], "eps": {"linf": [0.1], "l2": [1.0]}})
        html = result.html()
        mb = len(html.encode()) / 1e6
        print(f"{n:>6} images: report.html {mb:.2f} MB ({mb / BUDGET_MB:.0%} of the {BUDGET_MB:.0f} MB budget), "
              f"explorer {html.count('<tr data-class=')} rows, "
              f"audit {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
