"""`AuditedModel`: the only view of the user's model the checks ever see.

Every check perturbs pixels in [0, 1] at the model's input size; normalization (mean/std) happens
in here, inside the differentiable graph, so an attack's eps is in pixel units and no check has to
know how the model was trained. Models that end in softmax are detected and given log-probabilities,
which are valid logits (softmax(log p) = p), so losses and attacks see a proper logit scale.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AuditError


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    return bool(out.numel() and (out >= 0).all() and torch.allclose(
        out.sum(dim=1), torch.ones(out.shape[0], dtype=out.dtype, device=out.device), atol=1e-4))


class AuditedModel(nn.Module):
    def __init__(self, model: nn.Module, *, mean=None, std=None, channels: int = 3,
                 input_size: tuple[int, int] = (32, 32), outputs_probabilities: bool = False):
        super().__init__()
        self.model = model
        self.channels = int(channels)
        self.input_size = tuple(int(s) for s in input_size)
        self.outputs_probabilities = outputs_probabilities
        mean = torch.as_tensor(mean if mean is not None else [0.0] * self.channels, dtype=torch.float32)
        std = torch.as_tensor(std if std is not None else [1.0] * self.channels, dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.mean) / self.std)
        if isinstance(out, (tuple, list)):
            out = out[0]  # e.g. (logits, aux) from inception-style heads
        if self.outputs_probabilities:
            out = torch.log(out.clamp_min(1e-12))
        return out

    def train(self, mode: bool = True) -> "AuditedModel":
        # An audit measures the deployed model: attack libraries call .train(False)/.train(True) around
        # gradient computations, and exported programs refuse .eval() altogether, so the user's model is
        # never switched out of the mode it was loaded in (eval).
        self.training = mode
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise AuditError("--device cuda was given but no CUDA device is available; use --device cpu or auto.")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise AuditError(f"--device {device!r} is not one of auto, cpu, cuda.")
    return torch.device(device)


def build_audited_model(module: nn.Module, *, channels: int | None, input_size: tuple[int, int],
                        mean, std, device: torch.device) -> tuple[AuditedModel, int]:
    """Wrap `module` and learn (channels, num_classes, softmax head?) from a tiny probe batch.

    When --channels is not given, 3 is tried before 1. Random images (not zeros) are used so a softmax
    head cannot look like logits by accident.
    """
    tried = [channels] if channels else [3, 1]
    errors = []
    for c in tried:
        for stat, name in ((mean, "--mean"), (std, "--std")):
            if stat is not None and len(stat) not in (1, c):
                raise AuditError(f"{name} has {len(stat)} values but the model takes {c} channels; "
                                 f"give 1 or {c} values.")
        wrapped = AuditedModel(module, mean=_expand(mean, c, 0.0), std=_expand(std, c, 1.0), channels=c,
                               input_size=input_size).to(device)
        x = torch.rand(2, c, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
        try:
            with torch.no_grad():
                out = wrapped(x)
        except Exception as exc:  # the model's own error: shape mismatch, fixed batch size, ...
            errors.append(f"{c} channels: {str(exc).strip().splitlines()[0][:200]}")
            continue
        if out.ndim != 2:
            raise AuditError(f"The model returns a tensor of shape {tuple(out.shape)}, not (batch, classes); "
                             "audit a classifier that returns one logit per class.")
        wrapped.outputs_probabilities = _looks_like_probabilities(out.float())
        return wrapped, int(out.shape[1])
    raise AuditError(f"The model fails on a {input_size[0]}x{input_size[1]} input ({'; '.join(errors)}); "
                     "check --input-size and --channels.")


def _expand(values, channels: int, default: float) -> list[float]:
    if values is None:
        return [default] * channels
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values
