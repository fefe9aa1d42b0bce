"""cnnaudit's adversarial check against AutoAttack (Croce & Hein 2020, torchattacks' implementation,
version="standard": APGD-CE, APGD-T, FAB-T, Square with 5,000 queries), on the same images, side by side.

Workloads (WORKLOADS below; each at the L-inf budget its robustness is quoted at):
- digits: the demo's digits CNN (honest gradients), at 0.1;
- madry: a digits CNN adversarially trained Madry-style at 0.1 (PGD-20, 30 epochs; cached);
- madry40-0.3 / madry40-0.1: trained hard, Madry et al.'s MNIST recipe (PGD-40, step 2.5 eps / 40, to
  convergence with a cosine learning rate; the 0.3 one on black-and-white digits, as MNIST's are), where the
  loss surface is flat and survivors sit near the boundary (cached; minutes each on 2 cores);
- quantized: the digits CNN behind round(4x)/4 on its input (zero gradients everywhere: obfuscated), at 0.1;
- resnet18: torchvision ResNet-18 trained on the digits at 32 px, 3 channels, at 0.1;
- resnet18-madry: the same ResNet-18 adversarially trained (PGD-7 at 8/255, 5 epochs; cached), at 8/255, on
  a third of --n images (AutoAttack takes minutes a hundred images there).
For each: robust accuracy and seconds for cnnaudit (its whole audit call, clean pass, sanity checks and
self-test included) and for AutoAttack, in the same run; the samples broken by one and not the other;
how many of cnnaudit's survivors are near the boundary; its gradient-masking verdict. Targets (issues 16
and 28): where gradients are honest, within 1 pp of AutoAttack, never more than 1 pp above it, in at least
10x less time; where they are obfuscated, no higher than AutoAttack + 2 pp, masking confirmed.

    pip install -e . && pip install --no-deps torchattacks   # torchattacks pins requests~=2.25 (see README)
    python benchmarks/bench_autoattack.py [--n 300] [--workloads madry40-0.3,madry40-0.1] [--strength fast]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import digits_workload, madry_workload, resnet_workload, robust_resnet_workload  # noqa: E402

import cnnaudit  # noqa: E402
from cnnaudit.data import iter_batches, open_dataset  # noqa: E402


class Quantized(nn.Module):
    """The input rounded to 4 levels inside the forward: a classic obfuscated-gradient "defence"."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4)


# name: (what it is, the L-inf budget it is audited at); the hard ones are trained to convergence (cosine
# learning rate) with PGD-40, Madry et al.'s MNIST recipe, and cached in benchmarks/.cache
WORKLOADS = {
    "digits": ("digits CNN", 0.1),
    "madry": ("digits CNN, Madry PGD-20 training at 0.1, 30 epochs", 0.1),
    "madry40-0.3": ("digits CNN, Madry PGD-40 training at 0.3 to convergence (binary digits)", 0.3),
    "madry40-0.1": ("digits CNN, Madry PGD-40 training at 0.1 to convergence", 0.1),
    "quantized": ("digits CNN behind `round(4x)/4` (obfuscated)", 0.1),
    "resnet18": ("ResNet-18, 32 px", 0.1),
    "resnet18-madry": ("ResNet-18, 32 px, Madry PGD-7 training at 8/255, 5 epochs", 8 / 255),
}
HARD_EPOCHS = 50


def workload(name: str, n: int):
    """(model, data folder, channels, eps) of a named workload."""
    if name == "digits":
        model, root = digits_workload(n)
    elif name == "madry":
        model, root = madry_workload(n)
    elif name == "madry40-0.3":
        model, root = madry_workload(n, eps=0.3, steps=40, epochs=HARD_EPOCHS, cosine=True, binary=True)
    elif name == "madry40-0.1":
        model, root = madry_workload(n, eps=0.1, steps=40, epochs=HARD_EPOCHS, cosine=True)
    elif name == "quantized":
        model, root = digits_workload(n)
        model = Quantized(model).eval()
    elif name == "resnet18":
        model, root = resnet_workload(n, size=32)
    elif name == "resnet18-madry":
        model, root = robust_resnet_workload(n, eps=8 / 255)
    else:
        raise SystemExit(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    return model, root, (3 if name.startswith("resnet18") else 1), WORKLOADS[name][1]


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
    parser.add_argument("--n", type=int, default=300, help="audited images per workload (default: %(default)s; "
                        "the robust ResNet-18 gets a third of it: AutoAttack needs minutes a hundred images there)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from "
                        f"{', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--strength", default="standard", help="cnnaudit's --attack-strength (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    rows = []
    # untimed: the first audit of a process pays one-time imports and allocator warm-up, the same for any
    # workload (AutoAttack's first call is as warm: torch is loaded by then)
    model, root, _, _ = workload("digits", 20)
    cnnaudit.audit(model, root, checks=["adversarial"], batch_size=args.batch_size,
                   adversarial={"norms": ("linf",), "eps": {"linf": [0.1]}})
    for name in args.workloads.split(","):
        n = args.n // 3 if name == "resnet18-madry" else args.n
        model, root, channels, eps = workload(name, n)
        ids, x, y = images(root, channels)
        t = time.perf_counter()
        result = cnnaudit.audit(model, root, checks=["adversarial"], batch_size=args.batch_size,
                                adversarial={"norms": ("linf",), "eps": {"linf": [eps]},
                                             "attack_strength": args.strength})
        t_ours = time.perf_counter() - t
        adv = result.summary["adversarial"]
        per = result.samples.query("check == 'adversarial'").set_index("sample_id")["correct"]
        ours = per.reindex(ids).to_numpy().astype(bool)
        t = time.perf_counter()
        theirs = autoattack(model, x, y, eps, args.batch_size)
        t_aa = time.perf_counter() - t
        found = {k: v for k, v in adv["results"][-1].get("found_by", {}).items() if k != "clean_error"}
        rows.append({"workload": name, "n": n, "near": adv["results"][-1].get("n_near_boundary"),
                     "eps": eps, "cnnaudit": ours.mean(), "autoattack": theirs.mean(), "t_ours": t_ours,
                     "t_aa": t_aa, "only_ours": int((~ours & theirs).sum()), "only_aa": int((ours & ~theirs).sum()),
                     "masking": adv.get("gradient_masking", "suspected" if adv["gradient_masking_suspected"]
                                        else "none"), "found_by": found})
        r = rows[-1]
        print(f"{name}: cnnaudit {r['cnnaudit']:.3f} in {t_ours:.1f} s, AutoAttack {r['autoattack']:.3f} in "
              f"{t_aa:.1f} s; broken only by cnnaudit {r['only_ours']}, only by AutoAttack {r['only_aa']}; "
              f"masking {r['masking']}; near the boundary {r['near']}; found by {found}", flush=True)
    print(f"\n{torch.get_num_threads()} threads, batch {args.batch_size}, cnnaudit --attack-strength {args.strength}")
    print("| workload | images | L-inf eps | cnnaudit robust acc. | AutoAttack robust acc. | difference (pp) | cnnaudit s | "
          "AutoAttack s | time ratio | broken only by cnnaudit | broken only by AutoAttack | near boundary | masking |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {WORKLOADS[r['workload']][0]} | {r['n']} | {r['eps']:.4g} | {100 * r['cnnaudit']:.1f}% | "
              f"{100 * r['autoattack']:.1f}% | {100 * (r['cnnaudit'] - r['autoattack']):+.1f} | {r['t_ours']:.1f} | "
              f"{r['t_aa']:.1f} | {r['t_aa'] / r['t_ours']:.1f}x | {r['only_ours']} | {r['only_aa']} | {r['near']} | "
              f"{r['masking']} |")


if __name__ == "__main__":
    main()
