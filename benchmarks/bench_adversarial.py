"""cnnaudit's adversarial check against the naive use of ART, on the same model, data and eps grid.

Naive: what a user's glue script does: a PyTorchClassifier with cross-entropy, then FGSM, PGD and
APGD-DLR from ART on every sample at every eps; a sample is robust at eps if every attack fails.
cnnaudit: the sound cascade (skip clean errors, keep examples across eps, expensive attacks on
survivors only). Both use the same attack settings (cnnaudit's defaults). Prints both robust-accuracy
tables, whether cnnaudit is at least as strong at every eps, and the time ratio.

    python benchmarks/bench_adversarial.py [--n 300] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import digits_workload  # noqa: E402

import cnnaudit  # noqa: E402
from cnnaudit.attacks.specs import ATTACKS, NORMS  # noqa: E402
from cnnaudit.checks.adversarial import DEFAULT_EPS, eps_label  # noqa: E402
from cnnaudit.data import iter_batches, open_dataset  # noqa: E402


GRIDS = {"default": {k: list(v) for k, v in DEFAULT_EPS.items()},
         "digits": {"linf": [0.05, 0.1, 0.2, 0.3], "l2": [1.0, 2.0, 3.0]}}


def naive_art(model, data_dir, grid, batch_size, attack_names):
    from art.attacks.evasion import AutoProjectedGradientDescent, FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier
    ds = open_dataset(data_dir)
    batches = list(iter_batches(ds, ds.table["sample_id"], channels=1, size=(32, 32), batch_size=10**9))
    x, y = batches[0].x.numpy(), batches[0].y.numpy()
    est = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=x.shape[1:], nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    y1 = np.eye(10, dtype=np.float32)[y]
    clean_ok = est.predict(x).argmax(1) == y
    table = {}
    for norm, eps_list in grid.items():
        for eps in eps_list:
            robust = clean_ok.copy()
            pgd, apgd = ATTACKS["pgd"], ATTACKS["apgd_dlr"]
            attacks = [
                FastGradientMethod(est, norm=NORMS[norm], eps=eps, eps_step=eps, batch_size=batch_size),
                ProjectedGradientDescent(est, norm=NORMS[norm], eps=eps, eps_step=eps * pgd.step_size,
                                         max_iter=pgd.steps, batch_size=batch_size, verbose=False),
                AutoProjectedGradientDescent(est, norm=NORMS[norm], eps=eps, eps_step=eps * apgd.step_size,
                                             max_iter=apgd.steps, nb_random_init=1, batch_size=batch_size,
                                             loss_type="difference_logits_ratio", verbose=False),
            ]
            np.random.seed(0)
            chosen = dict(zip(["fgsm", "pgd", "apgd_dlr"], attacks))
            for attack in (chosen[n] for n in attack_names):
                robust &= est.predict(attack.generate(x=x, y=y1)).argmax(1) == y
            table[(norm, eps)] = round(float(robust.mean()), 6)  # as cnnaudit's summary rounds
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="audited images (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--attacks", default="fgsm,pgd,apgd_dlr",
                        help="the attacks both sides run, from fgsm,pgd,apgd_dlr (default: %(default)s, "
                             "cnnaudit's standard cascade)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="digits",
                        help="eps grid: 'digits' (MNIST-style budgets, where digit models break) or 'default' "
                             "(cnnaudit's CIFAR-style defaults) (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, data_dir = digits_workload(args.n)
    grid = GRIDS[args.grid]

    t = time.perf_counter()
    attack_names = args.attacks.split(",")
    naive = naive_art(model, data_dir, grid, args.batch_size, attack_names)
    t_naive = time.perf_counter() - t

    t = time.perf_counter()
    result = cnnaudit.audit(model, data_dir, checks=["adversarial"], batch_size=args.batch_size,
                            adversarial={"eps": grid, "attacks": attack_names})
    t_ours = time.perf_counter() - t - result.summary["timing"]["clean"] - result.summary["timing"]["load"]
    ours = {(r["norm"], r["eps"]): r["robust_accuracy"] for r in result.summary["adversarial"]["results"]
            if r["attack"] == "worst_case"}

    print(f"workload: digits CNN, {args.n} images 1x32x32, attacks {args.attacks}, eps grid {grid}, "
          f"batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'norm':5} {'eps':>8} {'naive ART':>10} {'cnnaudit':>9}  at least as strong")
    strong = True
    for key in naive:
        ok = ours[key] <= naive[key] + 1e-9
        strong &= ok
        print(f"{key[0]:5} {eps_label(*key):>8} {naive[key]:10.4f} {ours[key]:9.4f}  {'yes' if ok else 'NO'}")
    print(f"time: naive ART {t_naive:.1f} s, cnnaudit {t_ours:.1f} s (attacks + sanity checks), "
          f"speed-up {t_naive / t_ours:.2f}x; cnnaudit at least as strong at every eps: {strong}")


if __name__ == "__main__":
    main()
