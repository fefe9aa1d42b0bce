"""cnnaudit's adversarial check against AutoAttack (Croce & Hein 2020, torchattacks' implementation,
version="standard": APGD-CE, APGD-T, FAB-T, Square with 5,000 queries), on the same images, side by side.

Workloads (L-inf 0.1, the budget digit models' robustness is usually quoted at; at 2/255, where
ResNet-18 keeps more, AutoAttack did not finish 300 images in 17 minutes on 2 cores):
- digits: the demo's digits CNN (honest gradients);
- madry: a digits CNN adversarially trained Madry-style at the audited budget (PGD-20; cached);
- quantized: the digits CNN behind round(4x)/4 on its input (zero gradients everywhere: obfuscated);
- resnet18: torchvision ResNet-18 trained on the digits at 32 px, 3 channels.
For each: robust accuracy and seconds for cnnaudit (standard cascade: its whole audit call, clean pass and
sanity checks included) and for AutoAttack, the samples broken by one and not the other, and cnnaudit's
gradient-masking verdict. Targets (issue 16): where gradients are honest, within 1 pp of AutoAttack in
at least 10x less time; where they are obfuscated, no higher than AutoAttack + 2 pp, masking confirmed.

    pip install -e '.[bench]'
    python benchmarks/bench_autoattack.py [--n 300] [--workloads digits,madry,quantized,resnet18]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import digits_workload, madry_workload, resnet_workload  # noqa: E402

import cnnaudit  # noqa: E402
from cnnaudit.data import iter_batches, open_dataset  # noqa: E402


class Quantized(nn.Module):
    """The input rounded to 4 levels inside the forward: a classic obfuscated-gradient "defence"."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4)


def workload(name: str, n: int):
    if name == "digits":
        model, root = digits_workload(n)
    elif name == "madry":
        model, root = madry_workload(n)
    elif name == "quantized":
        model, root = digits_workload(n)
        model = Quantized(model).eval()
    elif name == "resnet18":
        model, root = resnet_workload(n, size=32)
    else:
        raise SystemExit(f"unknown workload {name!r}")
    return model, root, (3 if name == "resnet18" else 1)


def images(root: Path, channels: int):
    ds = open_dataset(root)
    batch = next(iter_batches(ds, ds.table["sample_id"], channels=channels, size=(32, 32), batch_size=10**9))
    return batch.sample_ids, batch.x, batch.y


def autoattack(model, x, y, eps: float, batch_size: int):
    import torchattacks
    attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    with torch.no_grad():
        clean = torch.cat([model(xb).argmax(1) for xb in x.split(batch_size)]) == y
    robust = clean.clone()
    for i in range(0, len(x), batch_size):
        adv = attack(x[i:i + batch_size], y[i:i + batch_size])
        with torch.no_grad():
            robust[i:i + batch_size] &= model(adv).argmax(1) == y[i:i + batch_size]
    return robust.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="audited images per workload (default: %(default)s)")
    parser.add_argument("--eps", type=float, default=0.1, help="the L-inf budget (default: %(default)s)")
    parser.add_argument("--workloads", default="digits,madry,quantized,resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    rows = []
    for name in args.workloads.split(","):
        model, root, channels = workload(name, args.n)
        eps = args.eps
        ids, x, y = images(root, channels)
        t = time.perf_counter()
        result = cnnaudit.audit(model, root, checks=["adversarial"], batch_size=args.batch_size,
                                adversarial={"norms": ("linf",), "eps": {"linf": [eps]}})
        t_ours = time.perf_counter() - t
        adv = result.summary["adversarial"]
        per = result.samples.query("check == 'adversarial'").set_index("sample_id")["correct"]
        ours = per.reindex(ids).to_numpy().astype(bool)
        t = time.perf_counter()
        theirs = autoattack(model, x, y, eps, args.batch_size)
        t_aa = time.perf_counter() - t
        found = {k: v for k, v in adv["results"][-1].get("found_by", {}).items() if k != "clean_error"}
        rows.append({"workload": name, "eps": eps, "cnnaudit": ours.mean(), "autoattack": theirs.mean(), "t_ours": t_ours,
                     "t_aa": t_aa, "only_ours": int((~ours & theirs).sum()), "only_aa": int((ours & ~theirs).sum()),
                     "masking": adv.get("gradient_masking", "suspected" if adv["gradient_masking_suspected"]
                                        else "none"), "found_by": found})
        r = rows[-1]
        print(f"{name}: cnnaudit {r['cnnaudit']:.3f} in {t_ours:.1f} s, AutoAttack {r['autoattack']:.3f} in "
              f"{t_aa:.1f} s; broken only by cnnaudit {r['only_ours']}, only by AutoAttack {r['only_aa']}; "
              f"masking {r['masking']}; found by {found}", flush=True)
    print(f"\n{args.n} images each, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print("| workload | L-inf eps | cnnaudit robust acc. | AutoAttack robust acc. | difference (pp) | cnnaudit s | "
          "AutoAttack s | time ratio | broken only by cnnaudit | broken only by AutoAttack | masking |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['eps']:.4g} | {100 * r['cnnaudit']:.1f}% | {100 * r['autoattack']:.1f}% | "
              f"{100 * (r['cnnaudit'] - r['autoattack']):+.1f} | {r['t_ours']:.1f} | {r['t_aa']:.1f} | "
              f"{r['t_aa'] / r['t_ours']:.1f}x | {r['only_ours']} | {r['only_aa']} | {r['masking']} |")


if __name__ == "__main__":
    main()
