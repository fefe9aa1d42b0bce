"""On a GPU an attack step must not wait for the host more than once, and never copy images to it.
Checked without a GPU: a TorchFunctionMode records every call that makes the host read device data
(the same calls block on CUDA), during real attacks on a real model."""

from __future__ import annotations

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from cnnaudit.attacks import ATTACKS, AttackRunner
from cnnaudit.model.wrapper import AuditedModel

READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "argwhere", "cpu", "numpy",
         "masked_select", "unique"}

class HostReads(TorchFunctionMode):
    """(call, elements read) for each call that copies device data to the host or waits for its value."""

    def __init__(self):
        super().__init__()
        self.reads: list[tuple[str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name in READS and first is not None:
            self.reads.append((name, first.numel()))
        elif name == "__getitem__" and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool
                                           for a in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            self.reads.append(("boolean mask", int(args[1].numel())))  # the result's size needs the mask's count
        return func(*args, **(kwargs or {}))


def _model_and_batch(eager_model, digits):
    model = AuditedModel(eager_model, channels=1, input_size=(32, 32)).eval()
    x = digits[0][1000:1016]
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample correct, and eps tiny: every sample survives all steps
    return model, x, y


def test_torch_attacks_read_the_host_once_per_step_and_never_images(eager_model, digits):
    model, x, y = _model_and_batch(eager_model, digits)
    runner = AttackRunner(model, num_classes=10)
    image = x[0].numel()
    for name in ("pgd", "apgd_dlr"):
        spec = ATTACKS[name]
        with HostReads() as probe:
            runner.run(spec, x, y, eps=1e-6, norm="linf", seed=0, ids=np.arange(len(x)))
        assert probe.reads, "the probe saw nothing: it is not measuring"
        assert max(n for _, n in probe.reads) < image, probe.reads  # no image ever leaves the device
        assert len(probe.reads) <= spec.steps + 3, (name, len(probe.reads), spec.steps, probe.reads)


def test_the_probe_sees_art_apgd_copy_images_through_numpy(eager_model, digits):
    """ART's APGD steps through NumPy (its PyTorch PGD does not: only at the start and end of a batch)."""
    model, x, y = _model_and_batch(eager_model, digits)
    runner = AttackRunner(model, num_classes=10, backend="art")
    with HostReads() as probe:
        runner.run(ATTACKS["apgd_dlr"], x, y, eps=1e-6, norm="linf", seed=0)
    image_reads = [r for r in probe.reads if r[1] >= x[0].numel()]
    assert len(image_reads) >= 2 * ATTACKS["apgd_dlr"].steps, probe.reads  # the batch, twice a step
