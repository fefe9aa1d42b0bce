"""`AuditedModel`: the only view of the user's model the checks ever see.

Every check perturbs pixels in [0, 1] at the model's input size; normalization (mean/std) happens
in here, inside the differentiable graph, so an attack's eps is in pixel units and no check has to
know how the model was trained. Whatever the model returns (a tensor, a tuple, a dict with `logits`;
logits, probabilities, log-probabilities or a single binary logit) leaves here as float32 logits
`[N, C]` (outputs.py). Three guards every caller relies on:
- the model is never called on an empty batch (a traced `x.view(x.size(0), -1)` fails on one): an empty
  input gets an empty `[0, C]` result;
- a model exported with a static batch size is run `fixed_batch` images at a time, the last chunk padded
  with copies of its last image (detached, so no gradient flows into the padding) and the padding dropped;
- a model that drops the batch dimension for a batch of one (a `.squeeze()` head returns `[C]`, not
  `[1, C]`) is found on the probe and never given a batch of one: a single image is padded to two the
  same way (`pads_batch_of_one`); and every call's output shape is checked against the probe's, so a model
  that changes shape in the middle of an audit stops with one sentence, not a crash three checks later;
- inputs are cast to the model's parameter dtype (fp16/bf16 weights), outputs back to float32.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AuditError, first_line
from .query import QueryError
from .outputs import SINGLE, VALUE_KINDS, detect_kind, num_outputs, to_logits, unwrap

# Probe batch sizes: 3 first because a static export is usually traced at 1, 2 or a power of two; the rest
# are the static sizes users export at.
PROBE_BATCHES = (3, 1, 2, 4, 8, 16, 32, 64, 128)


class AuditedModel(nn.Module):
    def __init__(self, model: nn.Module, *, mean=None, std=None, channels: int = 3,
                 input_size: tuple[int, int] = (32, 32), output_kind: str = "logits", num_classes: int = 0,
                 positive_index: int = 1, fixed_batch: int | None = None, container: str | None = None,
                 input_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.channels = int(channels)
        self.input_size = tuple(int(s) for s in input_size)
        self.output_kind = output_kind
        self.container = container  # None (a bare tensor), "tuple[0]" or "dict[logits]"
        self.num_classes = int(num_classes)
        self.positive_index = int(positive_index)
        self.fixed_batch = fixed_batch
        self.pad_single = False  # the model mishandles a batch of one (see the module docstring)
        self.output_shape: tuple[int, ...] | None = None  # one image's output shape, learned on the probe
        self.input_dtype = input_dtype
        self.gradients = True  # False for a query-only model (model/query.py): forward passes only
        mean = torch.as_tensor(mean if mean is not None else [0.0] * self.channels, dtype=torch.float32)
        std = torch.as_tensor(std if std is not None else [1.0] * self.channels, dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.reshape(1, -1, 1, 1), persistent=False)

    def call(self, x: torch.Tensor):
        """The user's model on normalized x in its own dtype: whatever it returns, for exactly this batch."""
        return self.model(((x - self.mean) / self.std).to(self.input_dtype))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own output tensor (unwrapped from its container) for normalized x, any batch size."""
        b = self.fixed_batch
        if b is None and self.pad_single and len(x) == 1:
            return self.raw(torch.cat([x, x.detach()]))[:1]
        if b is None or len(x) == b:
            return self._checked(unwrap(self.call(x))[0], len(x))
        parts = []
        for chunk in x.split(b):
            k = len(chunk)
            if k < b:
                chunk = torch.cat([chunk, chunk[-1:].detach().expand(b - k, *chunk.shape[1:])])
            parts.append(self.raw(chunk)[:k])
        return torch.cat(parts)

    def calls(self, n: int) -> list[tuple[int, int]]:
        """How `raw` runs a batch of n: (rows given to the user's model, rows that are real images) per call.
        The padding always comes after the real rows (a forward hook's capture can be cut to them)."""
        b = self.fixed_batch
        if b is not None and n != b:
            return [(b, min(b, n - i)) for i in range(0, n, b)]
        if b is None and self.pad_single and n == 1:
            return [(2, 1)]
        return [(n, n)]

    def _checked(self, out: torch.Tensor, n: int) -> torch.Tensor:
        if self.output_shape is not None and tuple(out.shape) != (n, *self.output_shape):
            raise AuditError(f"The model returned an output of shape {tuple(out.shape)} for a batch of {n} "
                             f"image(s), where the probe saw {(n, *self.output_shape)}; a classifier must "
                             "return one row per image for every batch size (remove a .squeeze() or a "
                             "batch-dependent reshape from its head).")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(x):
            return torch.zeros(0, self.num_classes, device=x.device)
        return to_logits(self.raw(x), self.output_kind, self.positive_index)

    def train(self, mode: bool = True) -> "AuditedModel":
        # An audit measures the deployed model: attack libraries call .train(False)/.train(True) around
        # gradient computations, and exported programs refuse .eval() altogether, so the user's model is
        # never switched out of the mode it was loaded in (eval).
        self.training = mode
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def describe(self) -> dict:
        """The model's shape facts for summary.model."""
        return {"output_kind": self.container or self.output_kind, "output_values": self.output_kind,
                "fixed_batch_size": self.fixed_batch, "pads_batch_of_one": self.pad_single,
                "input_dtype": str(self.input_dtype).replace("torch.", ""),
                "mean": [round(float(v), 6) for v in self.mean.flatten()],
                "std": [round(float(v), 6) for v in self.std.flatten()]}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise AuditError("--device cuda was given but no CUDA device is available; use --device cpu or auto.")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise AuditError(f"--device {device!r} is not one of auto, cpu, cuda.")
    return torch.device(device)


def _input_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype if p.dtype in (torch.float16, torch.bfloat16, torch.float64) else torch.float32
    return torch.float32


def build_audited_model(module: nn.Module, *, channels: int | None, input_size: tuple[int, int],
                        mean, std, device: torch.device, output_kind: str | None = None,
                        batch_hint: int | None = None, real_images=None,
                        gradients: bool = True) -> tuple[AuditedModel, int]:
    """Wrap `module` and learn its channels, static batch size (if any), output container and kind and
    number of classes from probe batches.

    When --channels is not given, 3 is tried before 1. Random images (not zeros) are used so a softmax
    head cannot look like logits by accident; `real_images(channels)`, when given, adds up to a batch of
    the audit's own images to the probe, so the kind is judged on the outputs the audit will see."""
    if output_kind not in (None, "auto", *VALUE_KINDS):
        raise AuditError(f"--output-kind {output_kind!r} is not one of auto, {', '.join(VALUE_KINDS)}.")
    tried = [channels] if channels else [3, 1]
    dtype = _input_dtype(module)
    errors = []
    for c in tried:
        for stat, name in ((mean, "--mean"), (std, "--std")):
            if stat is not None and len(stat) not in (1, c):
                raise AuditError(f"{name} has {len(stat)} values but the model takes {c} channels; "
                                 f"give 1 or {c} values.")
        wrapped = AuditedModel(module, mean=_expand(mean, c, 0.0), std=_expand(std, c, 1.0), channels=c,
                               input_size=input_size, input_dtype=dtype).to(device)
        wrapped.gradients = gradients
        probe = _probe(wrapped, c, input_size, device, batch_hint)
        if isinstance(probe, str):
            errors.append(f"{c} channels: {probe}")
            continue
        out, batch, container = probe
        wrapped.fixed_batch, wrapped.container = batch, container
        wrapped.output_shape = tuple(out.shape[1:])
        if batch is None:
            wrapped.pad_single = not _takes_one(wrapped, out, c, input_size, device)
        if real_images is not None:
            x = real_images(c)
            if x is not None and len(x):
                try:
                    with torch.no_grad():
                        out = torch.cat([out.float(), wrapped.raw(x.to(device)).float()])
                except QueryError:  # an endpoint failing on these images: the clean pass lists them, one by one
                    pass
        kind = output_kind if output_kind not in (None, "auto") else detect_kind(out)
        if kind in SINGLE and out[0].numel() != 1:
            raise AuditError(f"--output-kind {kind} needs a model with one output per image; this one returns "
                             f"{out[0].numel()}.")
        wrapped.output_kind = kind
        wrapped.num_classes = num_outputs(out, kind)
        return wrapped, wrapped.num_classes
    raise AuditError(f"The model fails on a {input_size[0]}x{input_size[1]} input ({'; '.join(errors)}); "
                     "check --input-size and --channels.")


def _probe(wrapped: AuditedModel, c: int, size, device, hint) -> tuple[torch.Tensor, int | None, str | None] | str:
    """(output, static batch size or None, container) from the first batch size the model accepts, or the
    model's error for batch 3. A model that accepts 3 images takes any batch size."""
    first_error = None
    g = torch.Generator().manual_seed(0)
    for b in dict.fromkeys(b for b in (hint, *PROBE_BATCHES) if b):
        x = torch.rand(b, c, *size, generator=g).to(device)
        try:
            with torch.no_grad():
                raw = wrapped.call(x)
        except Exception as exc:  # the model's own error: shape mismatch, static batch size, ...
            first_error = first_error or first_line(exc, 200)
            continue
        out, container = unwrap(raw)  # not the model's failure: a return value cnnaudit cannot read
        if out.ndim == 0 or out.shape[0] != b:
            first_error = first_error or f"a batch of {b} gave an output of shape {tuple(out.shape)}"
            continue
        return out.detach(), (None if b == 3 and b != hint else b), container
    return first_error or "no batch size worked"


def _takes_one(wrapped: AuditedModel, out: torch.Tensor, c: int, size, device) -> bool:
    """Whether a model with a dynamic batch size returns a proper `[1, ...]` output for one image."""
    x = torch.rand(1, c, *size, generator=torch.Generator().manual_seed(1)).to(device)
    try:
        with torch.no_grad():
            one = unwrap(wrapped.call(x))[0]
    except Exception:  # noqa: BLE001 - fails on one image (e.g. a squeeze then a reshape): pad to two
        return False
    return tuple(one.shape) == (1, *out.shape[1:])


def _expand(values, channels: int, default: float) -> list[float]:
    if values is None:
        return [default] * channels
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values
