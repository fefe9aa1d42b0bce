"""The training-set audit at scale: leakage and out-of-distribution search for 100,000 training and 20,000
evaluation images on this machine, without decoding (the searches themselves; decoding costs what the
clean pass costs), and the distances behind the calibrated near-copy threshold.

    python benchmarks/bench_training.py [--train 100000 --eval 20000]

Synthetic thumbnails: the 1,797 digits (at 32 px) repeated with seeded shifts of up to 2 pixels and
contrast changes; 200 evaluation images are planted copies of training images (100 exact, 100
re-encoded as JPEG and shifted by a pixel). With only 1,797 sources, the sets also share genuine near
copies (the same digit at the same shift), which the search rightly reports. A quadratic search would
compare 2 x 10^9 pairs."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnaudit.bias import training as tr  # noqa: E402
from cnnaudit.demo import digits_images  # noqa: E402


def thumbs(x: torch.Tensor, side: int) -> np.ndarray:
    return (F.interpolate(x, size=(side, side), mode="area")[:, 0].numpy() * 255 + 0.5).astype(np.uint8)


def jpeg_shift(a: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.roll(a, 1, axis=1)).save(buf, format="JPEG", quality=75)
    return np.array(Image.open(buf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=20_000)
    args = parser.parse_args()
    x, _, _ = digits_images(seed=0)
    rng = np.random.default_rng(0)

    def synth(n):
        idx = rng.integers(0, len(x), n)
        xs = x[idx].clone()
        xs = torch.roll(xs, shifts=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), dims=(2, 3))
        gain = torch.from_numpy(rng.uniform(0.6, 1.0, (n, 1, 1, 1)).astype(np.float32))
        return (xs * gain).clamp(0, 1)

    train, evaluated = synth(args.train), synth(args.eval)
    t_big, e_big = thumbs(train, 32), thumbs(evaluated, 32)
    planted = rng.choice(args.train, 200, replace=False)
    e_big[:100] = t_big[planted[:100]]
    e_big[100:200] = np.stack([jpeg_shift(t_big[j]) for j in planted[100:200]])
    e_small = thumbs(torch.from_numpy(e_big[:, None].astype(np.float32) / 255), 8)
    t_small = thumbs(train, 8)
    t0 = time.perf_counter()
    found, calibration = tr.near_copies(t_big, e_big, seed=0)
    t_leak = time.perf_counter() - t0
    hits = {i: j for i, j, _ in found}
    recall = np.mean([i in hits for i in range(200)])  # its source, or an identical twin of it
    t0 = time.perf_counter()
    emb_t = t_small.reshape(len(t_small), -1).astype(np.float32)
    emb_e = e_small.reshape(len(e_small), -1).astype(np.float32)
    tr.ood_distances(emb_t, emb_e, seed=0)
    t_ood = time.perf_counter() - t0
    print(f"{args.train:,} training x {args.eval:,} evaluation images: leakage search {t_leak:.1f} s "
          f"(planted copies found: {recall:.0%}; {len(found)} evaluation images with a near copy in all), "
          f"out-of-distribution kNN {t_ood:.1f} s")
    # the distances behind NEAR: planted copies (JPEG and a shift) vs each image's nearest different one
    copies = [tr.shifted_mad(e_big[i], t_big[planted[i]]) for i in range(100, 200)]
    print(f"re-encoded and shifted copies: distance max {max(copies):.3f}; calibrated threshold "
          f"{calibration['threshold']:.3f} (half the 10% quantile {calibration['reference_distance']:.3f} of "
          f"{calibration['n_reference']:,} training images' nearest-neighbour distances; bound NEAR = {tr.NEAR})")


if __name__ == "__main__":
    main()
