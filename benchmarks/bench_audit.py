"""The full default audit on a fixed workload: per-phase time, images/s, peak memory, the compute floor
and efficiency = floor / actual.

The floor is the forward and backward passes the audit actually made (counted by a hook on the model:
samples through a forward pass with input gradients, and without), timed on the same model in the same
run at the audit's batch size with nothing else around them (and, for comparison, at a large batch). Efficiency below 1 is overhead: data decoding,
corruption generation, attack bookkeeping, statistics, report rendering.

    python benchmarks/bench_audit.py                               # digits CNN, 300 images
    python benchmarks/bench_audit.py --model resnet18              # ResNet-18, 1,000 images at 32 px
    python benchmarks/bench_audit.py --model resnet18 --size 224   # ResNet-18, 48 images at 224 px
    python benchmarks/bench_audit.py --memory                      # peak memory growth per 10,000 images
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import digits_workload, many_digits, resnet_workload  # noqa: E402

import cnnaudit  # noqa: E402
from cnnaudit.model import wrapper  # noqa: E402


class PassCounter:
    """Counts samples through forward passes of every AuditedModel, with and without input gradients, and
    the seconds spent inside them and inside torch.autograd.grad (the attacks' backward passes): what the
    audit spends outside is its own overhead, whatever the machine's speed at the moment."""

    def __init__(self):
        self.passes: list[list] = []  # [with input gradients?, samples, seconds] per pass: every figure below
        self._orig, self._orig_grad = wrapper.AuditedModel.forward, torch.autograd.grad
        counter = self

        def forward(model, x):
            with_grad = torch.is_grad_enabled() and x.requires_grad
            t = time.perf_counter()
            try:
                return counter._orig(model, x)
            finally:
                counter.passes.append([with_grad, len(x), time.perf_counter() - t])

        def grad(*args, **kwargs):  # a backward pass belongs to the forward pass just before it
            t = time.perf_counter()
            try:
                return counter._orig_grad(*args, **kwargs)
            finally:
                if counter.passes:
                    counter.passes[-1][2] += time.perf_counter() - t
        wrapper.AuditedModel.forward = forward
        torch.autograd.grad = grad

    @property
    def grad(self) -> int:
        return sum(n for g, n, _ in self.passes if g)

    @property
    def plain(self) -> int:
        return sum(n for g, n, _ in self.passes if not g)

    @property
    def seconds(self) -> float:
        return sum(sec for _, _, sec in self.passes)

    def full_batch_cost(self) -> tuple[float, float, int, int]:
        """Seconds per sample of this audit's own widest passes (forward; forward+backward), as they ran, and
        those widths: the batch size, or all of a set smaller than one batch."""
        def per_sample(with_grad):
            widest = max((n for g, n, _ in self.passes if g == with_grad), default=0)
            full = [(n, sec) for g, n, sec in self.passes if g == with_grad and n == widest]
            return sum(sec for _, sec in full) / max(sum(n for n, _ in full), 1), widest
        (f, wf), (b, wb) = per_sample(False), per_sample(True)
        return f, b, wf, wb

    def restore(self):
        wrapper.AuditedModel.forward, torch.autograd.grad = self._orig, self._orig_grad


def per_sample_cost(model, shape, batch: int, repeats: int) -> tuple[float, float]:
    """Seconds per sample for a forward pass, and for a forward plus input-gradient backward pass: the median
    of `repeats` timed passes after a warm-up (one pass on a shared 2-core machine can take 1.5x another)."""
    x = torch.rand(batch, *shape)

    def grad_pass():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).logsumexp(1).sum(), xg)

    def median_time(fn):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) / batch

    with torch.no_grad():
        fwd = median_time(lambda: model(x))
    return fwd, median_time(grad_pass)


def reset_peak_memory() -> float:
    """Start a new peak (Linux: /proc/self/clear_refs "5"), so that timing the floor's passes before the
    audit does not count as the audit's memory; the resident MB now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def peak_memory() -> float:
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: the process's peak


GRID = {"linf": [0.05, 0.1, 0.2], "l2": [1.0, 2.0]}  # budgets that suit digits (the default grid is CIFAR's)


def workload(args):
    root = Path(tempfile.mkdtemp(prefix="cnnaudit-bench-"))
    if args.model == "digits":
        model, data = digits_workload(args.n, root=root)
        return model, data, 1
    model, data = resnet_workload(args.n, size=args.size, root=root)
    return model, data, 3


def speed(args) -> None:
    model, data, channels = workload(args)
    # The floor is timed at the audit's own batch size: the passes it must make, as it was asked to make
    # them. A larger batch can be cheaper per sample on a CPU, which is a setting, not overhead; the floor
    # at a large batch is printed too (run with that --batch-size to compare like for like). This shared
    # machine's speed drifts by up to 20% over minutes, so the audit's batch is timed before and after it.
    shape, reps = (channels, args.size, args.size), (lambda b: max(5, 2048 // b) if args.size <= 64 else 5)
    before = per_sample_cost(model, shape, batch=args.batch_size, repeats=reps(args.batch_size))
    counter = PassCounter()
    base_mb = reset_peak_memory()
    t = time.perf_counter()
    try:
        result = cnnaudit.audit(model, data, batch_size=args.batch_size, channels=channels,
                                input_size=(args.size, args.size), adversarial={"eps": GRID})
        html = result.html()
    finally:
        counter.restore()
    total = time.perf_counter() - t
    peak_mb = peak_memory()
    s = result.summary
    after = per_sample_cost(model, shape, batch=args.batch_size, repeats=reps(args.batch_size))
    fwd, both = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    big = 256 if args.size <= 64 else 32
    fwd_big, both_big = per_sample_cost(model, shape, batch=big, repeats=reps(big))
    floor, floor_big = counter.plain * fwd + counter.grad * both, counter.plain * fwd_big + counter.grad * both_big
    print(f"workload: {args.model}, {s['data']['n_samples']} images {channels}x{args.size}x{args.size}, batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads, clean accuracy {s['clean']['accuracy']:.3f}")
    print(f"{'phase':14}{'seconds':>9}{'images/s':>10}")
    for phase, secs in s["timing"].items():
        if isinstance(secs, float):
            print(f"{phase:14}{secs:9.2f}{s['data']['n_samples'] / max(secs, 1e-9):10.1f}")
    print(f"report render {len(html) / 1e6:.1f} MB")
    print(f"passes: {counter.plain} sample-forwards, {counter.grad} sample-forward+backwards, {counter.seconds:.1f} s "
          f"inside them; {total - counter.seconds:.1f} s ({(total - counter.seconds) / total:.0%}) outside")
    print(f"cost per sample (forward / forward+backward): {1e3 * fwd:.3f} / {1e3 * both:.3f} ms at batch "
          f"{args.batch_size} (before the audit {1e3 * before[1]:.3f}, after {1e3 * after[1]:.3f}), "
          f"{1e3 * fwd_big:.3f} / {1e3 * both_big:.3f} ms at batch {big}")
    print(f"compute floor {floor:.1f} s, actual {total:.1f} s, efficiency {floor / total:.2f} "
          f"(floor at batch {big}: {floor_big:.1f} s, {floor_big / total:.2f})")
    # The same floor with the cost per sample of the audit's own full-batch passes, timed while it ran: the
    # machine's drift cancels, since floor and actual are measured in the same minutes.
    f_in, b_in, wf, wb = counter.full_batch_cost()
    floor_in = counter.plain * f_in + counter.grad * b_in
    print(f"in-run floor {floor_in:.1f} s ({1e3 * f_in:.3f} / {1e3 * b_in:.3f} ms per sample in the audit's "
          f"widest passes, of {wf} / {wb}), efficiency {floor_in / total:.2f}")
    print(f"peak resident memory {peak_mb:.0f} MB during the audit ({base_mb:.0f} MB when it started)")


def memory_child(n: int, root: Path) -> None:
    """One audit of n images, written to disk as the CLI does; prints this process's peak RSS in MB."""
    model, _ = digits_workload(10, root=root / "unused")
    data = many_digits(n, root)
    result = cnnaudit.audit(model, data, channels=1, quiet=True,
                            adversarial={"eps": GRID, "attacks": ["fgsm"]})
    result.write(root / f"out-{n}")
    print(f"PEAK_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


def memory(args) -> None:
    """Peak memory of the default audit at three data sizes, n, n + 10,000 and n + 20,000, each in a fresh
    process: the growth per 10,000 extra images (target: under 50 MB). The first step also holds one-off
    costs that a small run has not paid yet (oneDNN's kernels for every batch shape the attacks' survivors
    take, allocator pools); the second step is the per-image rate. The cascade is FGSM only here, which
    writes the same rows per sample as the full one (memory grows with rows, not with attack steps) at a
    fraction of the time."""
    root = Path(tempfile.mkdtemp(prefix="cnnaudit-mem-"))
    sizes = [args.n, args.n + 10_000, args.n + 20_000]
    for n in sizes:  # written here, so that making the images does not count towards a child's peak
        many_digits(n, root)
    peaks = {}
    for n in sizes:
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--root", str(root)],
                             capture_output=True, text=True, check=True).stdout
        peaks[n] = float(out.split("PEAK_MB")[-1])
        print(f"{n:6d} images: peak resident memory {peaks[n]:7.1f} MB ({time.perf_counter() - t:.0f} s)")
    for small, large in zip(sizes, sizes[1:]):
        print(f"growth per 10,000 images from {small} to {large}: {peaks[large] - peaks[small]:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("digits", "resnet18"), default="digits")
    p.add_argument("--n", type=int, default=None, help="images (default: digits 300, resnet18 1000 at 32 px, "
                                                       "48 at 224 px; --memory: 1000)")
    p.add_argument("--size", type=int, default=32, choices=(32, 224))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--memory", action="store_true", help="peak memory growth per 10,000 extra images")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.root)
    if args.memory:
        args.n = args.n or 1000
        return memory(args)
    if args.model == "digits" and args.size != 32:
        p.error("the digits CNN takes 32 px inputs; use --model resnet18 for --size 224")
    args.n = args.n or {"digits": 300, "resnet18": 1000 if args.size == 32 else 48}[args.model]
    speed(args)


if __name__ == "__main__":
    main()
