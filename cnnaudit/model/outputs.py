"""What a model returns, turned into logits `[N, C]`: the one place that knows the shapes models come in.

Containers (the rule, in this order):
- a tensor is used as it is;
- a tuple or list: its first element (`(logits, aux)` from inception-style heads, `(logits, features)`);
- a mapping with a `logits` key, or an object with a `logits` attribute (Hugging Face's `ModelOutput`,
  which is both): that value.
Anything else is refused with one sentence naming what came back.

Values (detected on a probe, or given with `--output-kind`):
- `logits` `[N, C]`: used as they are;
- `probabilities` (rows >= 0 summing to 1): their logarithm, which is a valid logit vector
  (softmax(log p) = p), so losses and attacks see a proper logit scale;
- `log_probabilities` (rows <= 0 whose exponentials sum to 1): used as they are, for the same reason;
- `single_logit` `[N]` or `[N, 1]` (a binary head trained with BCEWithLogits): the two logits
  `[0, z]`, z at the position of the positive class. softmax([0, z]) = (1 - sigmoid(z), sigmoid(z)), so
  probabilities, the decision (z > 0) and the attack losses are those of the sigmoid head;
- `single_probability` `[N]` or `[N, 1]` in [0, 1] (a binary head ending in a sigmoid): its logit
  log(p) - log(1 - p) as above.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import AuditError

VALUE_KINDS = ("logits", "probabilities", "log_probabilities", "single_logit", "single_probability")
SINGLE = ("single_logit", "single_probability")
_CLAMP = 1e-12  # log(0) guard for saturated probabilities


def unwrap(out) -> tuple[torch.Tensor, str | None]:
    """The tensor inside a model's return value and the container it came in (None for a bare tensor)."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], "tuple[0]"
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits, "dict[logits]"
    raise AuditError(f"The model returned {_describe(out)}, not a tensor of logits; cnnaudit reads a tensor, a "
                     "tuple/list whose first element is one, or a dict/object with a 'logits' tensor.")


def _describe(out) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {sorted(map(str, out))[:6]}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} item(s) whose first is {type(out[0]).__name__ if out else 'none'}"
    return f"a {type(out).__name__}"


def detect_kind(out: torch.Tensor) -> str:
    """The value kind of a probe's outputs (the first dimension is the batch)."""
    out = out.detach().float()
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        flat = out.reshape(-1)
        return "single_probability" if bool(((flat >= 0) & (flat <= 1)).all()) else "single_logit"
    if out.ndim != 2:
        raise AuditError(f"The model returns a tensor of shape {tuple(out.shape)}, not (batch, classes); "
                         "audit a classifier that returns one logit per class.")
    ones = torch.ones(out.shape[0], device=out.device)
    if bool((out >= 0).all()) and torch.allclose(out.sum(dim=1), ones, atol=1e-4):
        return "probabilities"
    if bool((out <= 0).all()) and torch.allclose(out.exp().sum(dim=1), ones, atol=1e-4):
        return "log_probabilities"
    return "logits"


def to_logits(out: torch.Tensor, kind: str, positive_index: int = 1) -> torch.Tensor:
    """`[N, C]` float32 logits from values of `kind` (see the module docstring)."""
    out = out.float()
    if kind == "logits" or kind == "log_probabilities":
        return out
    if kind == "probabilities":
        return torch.log(out.clamp_min(_CLAMP))
    z = out.reshape(out.shape[0])
    if kind == "single_probability":
        z = torch.log(z.clamp_min(_CLAMP)) - torch.log((1 - z).clamp_min(_CLAMP))
    zero = torch.zeros_like(z)
    return torch.stack([zero, z] if positive_index == 1 else [z, zero], dim=1)


def num_outputs(out: torch.Tensor, kind: str) -> int:
    """Classes the model distinguishes: a single output is a two-class model."""
    return 2 if kind in SINGLE else int(out.shape[1])
