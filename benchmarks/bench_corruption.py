"""Corruption generation speed against albumentations, and its share of a corruption audit.

1. Images/s of each cnnaudit corruption (severity 3, batches of 64 at 32 px, 16 at 224 px, on the CPU)
   next to albumentations' RandomRain, RandomSnow and RandomBrightnessContrast (one image at a time,
   as albumentations works) in the same run.
2. For a ResNet-18 (random weights: speed does not depend on them) at 224 px, the time to generate each
   corruption against the time of the forward pass the audit makes on the corrupted batch; target:
   generation under 25% of the forward time.

    pip install albumentations   # optional: without it part 1 shows cnnaudit alone
    python benchmarks/bench_corruption.py [--batch-224 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from cnnaudit.corruptions import CORRUPTIONS, corrupt


def photos(n: int, size: int) -> torch.Tensor:
    imgs = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    x = torch.cat([F.interpolate(torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float() / 255,
                                 size=(size, size), mode="bilinear", antialias=True) for i in imgs])
    return x.repeat((n + 3) // 4, 1, 1, 1)[:n].contiguous()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def albumentations_rates(x: torch.Tensor, repeats: int) -> dict[str, float]:
    try:
        import albumentations as A
    except ImportError:
        return {}
    imgs = [(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for img in x]
    transforms = {"RandomRain": A.RandomRain(p=1.0), "RandomSnow": A.RandomSnow(p=1.0),
                  "RandomBrightnessContrast": A.RandomBrightnessContrast(p=1.0)}
    out = {}
    for name, t in transforms.items():
        out[name] = len(imgs) / timed(lambda t=t: [t(image=i)["image"] for i in imgs], repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-224", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    batches = {32: photos(64, 32), 224: photos(args.batch_224, 224)}
    print(f"\n1. images/s (severity 3){'':8}{'32 px':>10}{'224 px':>10}")
    for name in CORRUPTIONS:
        rates = [len(x) / timed(lambda x=x: corrupt(x, name, 3, seed=0, sample_ids=range(len(x))), args.repeats)
                 for x in batches.values()]
        print(f"   cnnaudit {name:24}{rates[0]:10.0f}{rates[1]:10.0f}")
    alb = {size: albumentations_rates(x, args.repeats) for size, x in batches.items()}
    for name in alb[32]:
        print(f"   albumentations {name:18}{alb[32][name]:10.0f}{alb[224][name]:10.0f}")
    if not alb[32]:
        print("   (albumentations not installed: pip install albumentations)")

    from torchvision.models import resnet18
    model = resnet18(num_classes=10).eval()
    x = batches[224]
    with torch.no_grad():
        forward = timed(lambda: model(x), args.repeats)
    print(f"\n2. ResNet-18 at 224 px, batch {len(x)}: forward {1000 * forward / len(x):.1f} ms/image")
    print(f"   {'corruption':16}{'generate ms/img':>16}{'share of forward':>18}  target < 25%")
    worst = 0.0
    for name in CORRUPTIONS:
        gen = timed(lambda: corrupt(x, name, 3, seed=0, sample_ids=range(len(x))), args.repeats)
        worst = max(worst, gen / forward)
        print(f"   {name:16}{1000 * gen / len(x):16.2f}{100 * gen / forward:17.1f}%  "
              f"{'ok' if gen / forward < 0.25 else 'OVER'}")
    total_gen = sum(timed(lambda n=n: corrupt(x, n, 3, seed=0, sample_ids=range(len(x))), 1) for n in CORRUPTIONS)
    share = total_gen / (total_gen + forward * len(CORRUPTIONS))
    print(f"   a corruption audit over all {len(CORRUPTIONS)} corruptions spends {100 * share:.1f}% of its time "
          f"generating and {100 * (1 - share):.1f}% running the model; worst single corruption "
          f"{100 * worst:.1f}% of a forward pass")


if __name__ == "__main__":
    main()
