"""ONNX files from any exporter (torch, Paddle2ONNX, tf2onnx, ...): converted to torch by onnx2torch where it
can (gradients flow, every attack runs), else run by onnxruntime as a query-only model (model/query.py).

What other exporters do that torch's does not, and what is done about it:
- Paddle2ONNX and several converters store weights as `Constant` nodes instead of initializers, and torch's
  exporter stores identical initializers once, the copies as `Identity` nodes; onnx2torch reads neither
  (KeyError on the first such weight): both are folded into initializers before conversion
  (`fold_constants`).
- tf2onnx keeps Keras' channels-last input `[N, H, W, C]`: the layout is read from the graph's static input
  shape (`query.static_layout`), or given with `--layout`, and the audit's NCHW images are permuted to it.
- onnx2torch's converters warn on every forward pass (hundreds of lines under --quiet): the warnings are
  recorded by `QuietModule` and reported once, with counts, as notes in summary.model and OUT/errors.log.
- onnx2torch lacks a converter, or its conversion disagrees with onnxruntime on a probe batch: the model
  runs in onnxruntime instead (query-only: Square is the only attack), and the note says why.
"""

from __future__ import annotations

import collections
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import AuditError, first_line
from .query import ChannelsLast, QueryBackend, QueryModule, check_layout, static_layout, to_nchw

# onnxruntime's and onnx2torch's outputs on the same probe batch may differ by float rounding; a larger
# relative difference means the conversion is wrong, and onnxruntime (the reference runtime) is used
AGREE_RTOL = 1e-3

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def fold_constants(graph) -> int:
    """Move the main graph's `Constant` nodes, and `Identity` nodes of an initializer, into initializers (in
    place); returns how many were moved."""
    from onnx import helper, numpy_helper
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type != "Constant" or len(node.output) != 1:
            keep.append(node)
            continue
        attr = node.attribute[0] if len(node.attribute) == 1 else None
        if attr is None:
            keep.append(node)
            continue
        if attr.name == "value":
            tensor = attr.t
        elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = helper.get_attribute_value(attr)
            dtype = np.float32 if attr.name.startswith("value_float") else np.int64
            tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        else:  # sparse_value, value_string(s): left as nodes
            keep.append(node)
            continue
        tensor = type(tensor).FromString(tensor.SerializeToString())
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        moved += 1
    # torch's exporter writes one copy of identical initializers (a fresh model's zero biases, tied weights)
    # and the others as Identity nodes of it, which onnx2torch does not read either: each gets its own copy
    stored = {i.name: i for i in graph.initializer}
    rest = []
    for node in keep:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in stored:
            tensor = type(stored[node.input[0]]).FromString(stored[node.input[0]].SerializeToString())
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            stored[tensor.name] = tensor
            moved += 1
        else:
            rest.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(rest)
    return moved


def input_shape(proto) -> list | None:
    """The first non-initializer input's shape: ints where static, None where dynamic or symbolic."""
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


class OnnxRuntimeQuery(QueryBackend):
    """An ONNX file run by onnxruntime: the reference runtime, forward passes only."""

    kind = "onnxruntime"

    def __init__(self, model: bytes | str, layout: str, path: str):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            from .loading import _needs_extra
            raise _needs_extra("ONNX models run by onnxruntime", "onnx", exc) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's problem
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:
            raise AuditError(f"Model file {path!r} could not be loaded by onnxruntime either "
                             f"({first_line(exc, 200)}); re-export it with a standard opset.") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_dtype = _ORT_TYPES.get(inp.type, np.float32)
        self.input_shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
        self.layout = layout
        self._lock = threading.Lock()  # one run at a time: sessions are thread-safe, but runs would contend

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.uint8:  # an image model taking 8-bit pixels
            x = np.clip(np.round(x * 255), 0, 255)
        elif self.input_dtype == np.int8:  # 8-bit pixels around the usual int8 zero point, as the endpoint sends
            x = np.clip(np.round(x * 255) - 128, -128, 127)
        with self._lock:
            return self.session.run([self.output_name], {self.input_name: x.astype(self.input_dtype)})[0]

    def describe(self) -> dict:
        return {"runtime": "onnxruntime", "providers": self.session.get_providers(),
                "input": {"name": self.input_name, "dtype": np.dtype(self.input_dtype).name,
                          "shape": self.input_shape}}


class QuietModule(nn.Module):
    """Runs a converted module with its warnings recorded (message -> count) instead of printed."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.warned: collections.Counter = collections.Counter()

    def forward(self, *args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = self.inner(*args)
        self.record(caught)
        return out

    def record(self, caught) -> None:
        for w in caught:
            self.warned[f"{w.category.__name__}: {first_line(w.message, 200)}"] += 1


def _has_ort() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _unconvertible(exc: Exception) -> str:
    """What onnx2torch could not convert, in a few words."""
    op = re.search(r"operation_type='([^']*)', version=(\d+)", str(exc))
    if op:
        return f"the operator {op.group(1)} (opset {op.group(2)})"
    return f"the graph ({type(exc).__name__}: {first_line(exc, 150)})"


def load_onnx(path: Path, digest: str, *, layout: str | None = None, query_only: bool = False):
    from .loading import LoadedModel, _needs_extra, _static_hints
    try:
        import onnx
    except ImportError as exc:
        raise _needs_extra("ONNX models", "onnx", exc) from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise AuditError(f"Model file {str(path)!r} is not a readable ONNX model ({first_line(exc, 200)}); export "
                         "it again (torch.onnx.export, tf2onnx, paddle2onnx).") from None
    notes = []
    folded = fold_constants(proto.graph)
    if folded:
        notes.append(f"{folded} Constant or Identity node(s) holding weights (as Paddle2ONNX, torch's exporter for "
                     "identical weights and other exporters write them) were folded into initializers before "
                     "conversion.")
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:  # noqa: BLE001 - shapes are a convenience for the converter, not required
        notes.append(f"onnx shape inference failed ({first_line(exc, 120)}); converted without it.")
    shape = input_shape(proto)
    layout = check_layout(layout) or static_layout(shape) or "nchw"
    if layout == "nhwc":
        notes.append("The model takes channels-last input [N, H, W, C] (read from its input shape, or --layout); "
                     "the audit's images are permuted to it.")
    batch, pre = _static_hints(to_nchw(shape, layout))

    def runtime(reason: str | None):
        backend = OnnxRuntimeQuery(proto.SerializeToString(), layout, str(path))
        if reason:
            notes.append(f"{reason}; the model runs in onnxruntime instead, which answers forward passes only, so "
                         "the adversarial check runs the gradient-free Square attack alone.")
        return LoadedModel(QueryModule(backend), str(path), "onnx", digest, supports_hooks=False, batch_hint=batch,
                           preprocessing=pre, gradients=False, layout=layout, notes=notes,
                           backend=backend.describe())

    if query_only:
        return runtime(None)
    try:
        from onnx2torch import convert
    except ImportError as exc:
        if _has_ort():
            return runtime("onnx2torch is not installed (pip install onnx2torch gives gradients)")
        raise _needs_extra("ONNX models", "onnx", exc) from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = convert(proto)
    except Exception as exc:  # noqa: BLE001 - any converter failure: NotImplementedError, KeyError, ...
        what = _unconvertible(exc)
        if _has_ort():
            return runtime(f"onnx2torch cannot convert {what}")
        raise AuditError(f"Model file {str(path)!r} uses {what}, which onnx2torch cannot convert to torch; install "
                         "onnxruntime (pip install 'cnnaudit[onnx]') to audit it without gradients, re-export with "
                         "another opset (e.g. torch.onnx.export(..., opset_version=17)), or save the model with "
                         "torch.jit.save or torch.export.save.") from None
    quiet = QuietModule(module.eval())
    quiet.record(caught)  # the conversion's own warnings count with those of the forward passes

    wrapped = ChannelsLast(quiet) if layout == "nhwc" else quiet
    disagreement = _disagreement(wrapped, proto, layout, to_nchw(shape, layout)) if _has_ort() else None
    if disagreement is not None:
        return runtime("onnx2torch's conversion fails on a probe batch that onnxruntime runs" if disagreement == float("inf")
                       else f"onnx2torch's conversion disagrees with onnxruntime on a probe batch (largest relative "
                            f"difference {disagreement:.2g})")
    return LoadedModel(wrapped, str(path), "onnx", digest, supports_hooks=True, batch_hint=batch, preprocessing=pre,
                       layout=layout, notes=notes)


def _disagreement(module: nn.Module, proto, layout: str, shape: list | None) -> float | None:
    """The relative difference between onnx2torch's and onnxruntime's outputs on a seeded random batch, when
    it exceeds AGREE_RTOL (None when they agree, or when the input shape is not static enough to probe:
    the audit's probe then finds the size, and a wrong conversion shows as a wrong clean accuracy)."""
    if not shape or len(shape) != 4 or not all(shape[1:]):
        return None
    n = shape[0] or 2
    x = torch.rand(n, *shape[1:], generator=torch.Generator().manual_seed(0))
    from .outputs import unwrap
    try:
        ref = QueryModule(OnnxRuntimeQuery(proto.SerializeToString(), layout, ""))(x).double()
    except Exception:  # noqa: BLE001 - a probe the reference cannot run decides nothing; the audit's probe reports
        return None
    try:
        with torch.no_grad():
            got = unwrap(module(x))[0].double()
    except Exception:  # noqa: BLE001 - onnxruntime runs the graph and the conversion does not: use onnxruntime
        return float("inf")
    if got.shape != ref.shape:
        return float("inf")
    diff = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    return diff if diff > AGREE_RTOL else None
