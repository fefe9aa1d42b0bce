"""The full default audit on a fixed workload: per-phase time, images/s, peak memory, the compute floor
and efficiency = floor / actual.

The floor is the forward and backward passes the audit actually made (counted by a hook on the model:
samples through a forward pass with input gradients, and without), timed on the same model in the same
run at a large batch with nothing else around them. Efficiency below 1 is overhead: data decoding,
corruption generation, attack bookkeeping, statistics, report rendering.

    python benchmarks/bench_audit.py [--model digits|resnet18] [--n 300] [--size 32] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import digits_workload  # noqa: E402

import cnnaudit  # noqa: E402
from cnnaudit.model import wrapper  # noqa: E402


class PassCounter:
    """Counts samples through forward passes of every AuditedModel, with and without input gradients."""

    def __init__(self):
        self.grad = self.plain = 0
        self._orig = wrapper.AuditedModel.forward
        counter = self

        def forward(model, x):
            if torch.is_grad_enabled() and x.requires_grad:
                counter.grad += len(x)
            else:
                counter.plain += len(x)
            return counter._orig(model, x)
        wrapper.AuditedModel.forward = forward

    def restore(self):
        wrapper.AuditedModel.forward = self._orig


def per_sample_cost(model, shape, batch: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds per sample for a forward pass, and for a forward plus input-gradient backward pass."""
    x = torch.rand(batch, *shape)
    with torch.no_grad():
        model(x)
        t = time.perf_counter()
        for _ in range(repeats):
            model(x)
        fwd = (time.perf_counter() - t) / repeats / batch
    t = time.perf_counter()
    for _ in range(repeats):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xg).logsumexp(1).sum(), xg)
    both = (time.perf_counter() - t) / repeats / batch
    return fwd, both


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("digits", "resnet18"), default="digits")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    model, data = digits_workload(args.n, root=Path(tempfile.mkdtemp(prefix="cnnaudit-bench-")))
    channels = 1
    if args.model == "resnet18":  # random weights: the cost of the passes does not depend on them
        from torchvision.models import resnet18
        model, channels = resnet18(num_classes=10).eval(), 3
    counter = PassCounter()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    try:
        result = cnnaudit.audit(model, data, batch_size=args.batch_size, channels=channels,
                                options={"adversarial": {"eps": {"linf": [0.05, 0.1, 0.2], "l2": [1.0, 2.0]}}})
        html = result.html()
    finally:
        counter.restore()
    total = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = result.summary
    fwd, both = per_sample_cost(model, (channels, 32, 32), batch=256)
    floor = counter.plain * fwd + counter.grad * both
    print(f"workload: {args.model}, {s['data']['n_samples']} images {channels}x32x32, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, clean accuracy {s['clean']['accuracy']:.3f}")
    print(f"{'phase':14}{'seconds':>9}{'images/s':>10}")
    for phase, secs in s["timing"].items():
        if isinstance(secs, (int, float)):
            print(f"{phase:14}{secs:9.2f}{s['data']['n_samples'] / max(secs, 1e-9):10.0f}")
    print(f"report render {len(html) / 1e6:.1f} MB")
    print(f"passes: {counter.plain} sample-forwards, {counter.grad} sample-forward+backwards; "
          f"cost {1e3 * fwd:.3f} / {1e3 * both:.3f} ms per sample at batch 256")
    print(f"compute floor {floor:.1f} s, actual {total:.1f} s, efficiency {floor / total:.2f}")
    print(f"peak resident memory {peak_mb:.0f} MB (before the audit {rss0 / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
