"""Models that answer forward passes and nothing else: an onnxruntime session, a TFLite interpreter, a
Python function, a live inference endpoint, or any model audited with `--query-only`.

A `QueryBackend` takes a float32 numpy batch in its own layout (NCHW or NHWC, already normalized) and
returns the model's scores as a numpy array, one row per image. `QueryModule` makes it an `nn.Module` so
that the rest of cnnaudit (the wrapper's probe, predictions, corruptions, occlusion) runs unchanged; it
has no gradients, and `AuditedModel.gradients` says so, so the adversarial check runs only the
gradient-free Square attack on it and marks the gradient sanity checks not applicable.

Every backend counts the images and calls it answered: the audit's cost in queries (summary.model.queries).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from ..errors import AuditError

LAYOUTS = ("nchw", "nhwc")


class QueryError(RuntimeError):
    """A query that failed after its retries (an endpoint's HTTP 500, a timeout): the batch has no scores."""


class QueryBackend:
    """One model that only answers queries. Subclasses set `kind` and implement `predict`."""

    kind = "query"
    layout = "nchw"  # the layout `predict` takes
    input_shape: list | None = None  # its static input shape in that layout (None for dynamic dims)
    input_dtype = np.float32  # what it takes: float32, or uint8/int8 for quantized models (the backend converts)

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        """What summary.model records about the backend (never a secret: no header values, no tokens)."""
        return {}

    def close(self) -> None:
        pass


class QueryModule(nn.Module):
    """A `QueryBackend` as an `nn.Module`: NCHW torch in, torch out on the input's device, no gradients."""

    def __init__(self, backend: QueryBackend):
        super().__init__()
        self.backend = backend
        self.images = 0  # images answered so far (the audit's query count)
        self.calls = 0
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).numpy()
        if self.backend.layout == "nhwc":
            arr = arr.transpose(0, 2, 3, 1)
        out = self.backend.predict(np.ascontiguousarray(arr))
        with self._lock:
            self.images += len(arr)
            self.calls += 1
        out = np.asarray(out)
        if out.dtype.kind not in "fiub":
            raise AuditError(f"The {self.backend.kind} model returned values of type {out.dtype}, not numbers; "
                             "it must return one row of scores per image.")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def extra_repr(self) -> str:
        return f"backend={self.backend.kind}, layout={self.backend.layout}"


class TorchQuery(QueryBackend):
    """A torch model audited as an API attacker sees it (`--query-only`): forward passes, no gradients."""

    kind = "torch (query-only)"

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu"):
        from .wrapper import _input_dtype
        self.module, self.device = module, torch.device(device)
        self.dtype = _input_dtype(module)  # an fp16/bf16/fp64 model gets its inputs in its own dtype

    def predict(self, x: np.ndarray) -> np.ndarray:
        from .outputs import unwrap
        with torch.no_grad():
            out = unwrap(self.module(torch.from_numpy(x).to(self.device, self.dtype)))[0]
        return out.float().cpu().numpy()


class CallableQuery(QueryBackend):
    """`--model-fn package.module:function`: a Python function from a float32 NCHW numpy batch (pixels in
    [0, 1] unless --mean/--std are given) to scores; it may return a torch tensor or anything numpy reads."""

    kind = "callable"

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.fn(x)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        return np.asarray(out)

    def describe(self) -> dict:
        return {"function": self.name}


def load_function(spec: str):
    """`package.module:function` imported (the user asked to run it: this is their code, not a model file's)."""
    import importlib
    if ":" not in spec or not all(spec.split(":", 1)):
        raise AuditError(f"--model-fn {spec!r} must look like 'package.module:function'.")
    module_name, attr = spec.split(":", 1)
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise AuditError(f"--model-fn {spec!r}: cannot import {attr!r} from {module_name!r} ({exc}); check the "
                         "spelling and that the module is on PYTHONPATH.") from None
    if not callable(obj):
        raise AuditError(f"--model-fn {spec!r} is a {type(obj).__name__}, not a function.")
    return obj


def static_layout(shape: list | None) -> str | None:
    """'nhwc' when a static 4-d input shape is channels-last ([N, H, W, C], C in {1, 3}, H and W > 4 and
    the second dimension not a channel count), 'nchw' when it is channels-first, None when it cannot tell."""
    if not shape or len(shape) != 4:
        return None
    _, a, b, c = shape
    if c in (1, 3) and (a or 0) > 4 and (b or 0) > 4 and a not in (1, 3):
        return "nhwc"
    if a in (1, 3):
        return "nchw"
    return None


def to_nchw(shape: list | None, layout: str) -> list | None:
    """A 4-d static shape in `layout` as [N, C, H, W]."""
    if not shape or len(shape) != 4 or layout == "nchw":
        return shape
    n, h, w, c = shape
    return [n, c, h, w]


class ChannelsLast(nn.Module):
    """A module that takes NHWC (an export from Keras/TensorFlow) fed NCHW by the audit; gradients flow."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module

    def forward(self, x: torch.Tensor):
        return self.inner(x.permute(0, 2, 3, 1).contiguous())


def check_layout(layout: str | None) -> str | None:
    if layout in (None, "auto"):
        return None
    if layout not in LAYOUTS:
        raise AuditError(f"--layout {layout!r} is not one of auto, nchw, nhwc.")
    return layout
