"""TensorFlow Lite (`.tflite`) files, run by the LiteRT interpreter as query-only models (model/query.py):
forward passes, no gradients, so the adversarial check runs the gradient-free Square attack alone.

What a TFLite file does that a torch model does not, and what is done about it:
- Channels-last input `[N, H, W, C]`, as TensorFlow exports it: the layout is read from the static input
  shape (`query.static_layout`; NHWC when it cannot tell), or given with `--layout`.
- Full-integer quantized models take int8 or uint8 tensors: the audit's float images are quantized with
  the input's (scale, zero point), q = round(x / scale + zero_point) clipped to the type's range, and the
  scores are dequantized with the output's.
- A batch size fixed in the file (usually 1): the interpreter is resized to each new batch size, which
  most image models accept; a model that refuses (a reshape to a constant shape) is run one fixed-size
  batch at a time, the last one padded, and `batch_hint` tells the audit its batch size.
- Interpreters are not thread-safe: one call at a time, under a lock.

The runtime is `ai-edge-litert` (`pip install 'cnnaudit[tflite]'`), else `tflite-runtime` or
`tensorflow.lite` when one of those is what is installed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import AuditError, first_line
from .query import QueryBackend, QueryModule, check_layout, static_layout, to_nchw


def interpreter_class():
    """The first TFLite interpreter importable: LiteRT, the standalone tflite-runtime, TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai-edge-litert"
    except ImportError as exc:
        first = exc
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        # torch._dynamo loads triton's LLVM, which crashes the process (SIGSEGV) when TensorFlow was loaded
        # first; Keras' torch backend and torch.export import it, so it goes first
        import torch._dynamo  # noqa: F401
        from tensorflow.lite import Interpreter
        return Interpreter, "tensorflow"
    except ImportError:
        from .loading import _needs_extra
        raise _needs_extra("TFLite models", "tflite", first) from None


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 pointed at /dev/null for the duration: the runtime's C++ logging writes there, under
    --quiet too, where Python's sys.stderr cannot catch it. Errors still surface as Python exceptions."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def is_tflite(path: Path) -> bool:
    """A TFLite flatbuffer: the file identifier "TFL3" at bytes 4-8, whatever the extension."""
    with open(path, "rb") as f:
        return f.read(8)[4:8] == b"TFL3"


def _quantization(detail: dict) -> tuple[float, int] | None:
    """(scale, zero_point) of a per-tensor quantized tensor, None for a float one."""
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if scale else None


class TFLiteQuery(QueryBackend):
    """A `.tflite` file in the LiteRT interpreter: float32 batches in its layout in, float32 scores out."""

    kind = "tflite"

    def __init__(self, model: str | Path, layout: str | None = None):
        self.Interpreter, self.runtime = interpreter_class()
        self.path = str(model)
        try:
            self.interpreter = self._new_interpreter()
        except (ValueError, RuntimeError) as exc:
            why = first_line(exc, 200)
            if "custom op" in why:  # TensorFlow ops kept by SELECT_TF_OPS (Flex...), or the author's own kernels
                raise AuditError(f"Model file {self.path!r} uses operators the TFLite runtime does not have ({why}); "
                                 "convert it with TFLite built-in ops only (no SELECT_TF_OPS), or export the model "
                                 "to ONNX (tf2onnx) and audit the .onnx file.") from None
            raise AuditError(f"Model file {self.path!r} is not a readable TFLite model ({why}); convert it again "
                             "with tf.lite.TFLiteConverter.") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise AuditError(f"Model file {self.path!r} takes {len(inputs)} input tensors; cnnaudit audits image "
                             "classifiers with one image input, so convert the model with a single input.")
        inp, out = inputs[0], self.interpreter.get_output_details()[0]
        self.outputs = len(self.interpreter.get_output_details())
        self.input_index, self.output_index = inp["index"], out["index"]
        self.input_dtype = np.dtype(inp["dtype"]).type
        self.output_dtype = np.dtype(out["dtype"]).type
        self.input_quant, self.output_quant = _quantization(inp), _quantization(out)
        signature = inp.get("shape_signature")
        signature = inp["shape"] if signature is None or not len(signature) else signature
        self.input_shape = [int(d) if d > 0 else None for d in signature]
        self.layout = check_layout(layout) or static_layout(self.input_shape) or "nhwc"
        self.batch = int(inp["shape"][0]) if len(inp["shape"]) else 1  # the batch size allocated now
        self.fixed_batch: int | None = None  # set when the model refuses another batch size
        self._lock = threading.Lock()

    # --- batch size ---------------------------------------------------------------------------------------
    def _new_interpreter(self):
        with _native_stderr_silenced():  # LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate" line
            interpreter = self.Interpreter(model_path=self.path, num_threads=max(1, torch.get_num_threads()))
            interpreter.allocate_tensors()
        return interpreter

    def _reset(self) -> None:
        """A fresh interpreter at the file's batch size (a failed allocation or run can leave one unusable)."""
        self.interpreter = self._new_interpreter()
        self.batch = int(self.interpreter.get_input_details()[0]["shape"][0])

    def _resize(self, n: int) -> bool:
        """Allocate the interpreter for batches of n; False (and the file's own size restored) if it refuses."""
        if n == self.batch:
            return True
        shape = [n, *self.interpreter.get_input_details()[0]["shape"][1:]]
        try:
            self.interpreter.resize_tensor_input(self.input_index, shape, strict=False)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError):
            self._reset()
            return False
        self.batch = n
        return True

    def resizable(self) -> bool:
        """Whether the model runs at another batch size than the one in its file, tried once on zeros (a
        reshape to a constant shape allocates at any size but fails at the first run)."""
        shape = self.input_shape or []
        if self.fixed_batch is None and len(shape) > 1 and shape[0] is not None and all(shape[1:]):
            self.predict(np.zeros([2 if shape[0] != 2 else 3, *shape[1:]], np.float32))
        return self.fixed_batch is None

    # --- one call -------------------------------------------------------------------------------------------
    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if not np.issubdtype(dtype, np.integer):
            return x.astype(dtype)
        if self.input_quant is not None:
            scale, zero = self.input_quant
            q = np.round(x / scale + zero)
        elif dtype == np.uint8:  # 8-bit pixels without quantization parameters (see onnxfile.OnnxRuntimeQuery)
            q = np.round(x * 255)
        else:
            q = np.round(x)
        info = np.iinfo(dtype)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output_quant is not None and np.issubdtype(self.output_dtype, np.integer):
            scale, zero = self.output_quant
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y.astype(np.float32)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, self._quantize(x))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output_index))

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            if self.fixed_batch is None:
                try:
                    if self._resize(len(x)):
                        return self._invoke(x)
                except (ValueError, RuntimeError):
                    if not self.input_shape or self.input_shape[0] is None:
                        raise  # a batch size the file leaves open: the failure is the model's, not the size's
                    self._reset()
                self.fixed_batch = self.batch
            b, outs = self.fixed_batch, []
            for start in range(0, len(x), b):
                chunk = x[start:start + b]
                real = len(chunk)
                if real < b:  # the last chunk padded with copies of its first image
                    chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - real, axis=0)])
                outs.append(self._invoke(chunk)[:real])
            return np.concatenate(outs)

    def describe(self) -> dict:
        def quantization(q):
            return None if q is None else {"scale": q[0], "zero_point": q[1]}
        return {"runtime": self.runtime, "outputs": self.outputs, "fixed_batch_size": self.fixed_batch,
                "input": {"dtype": np.dtype(self.input_dtype).name, "shape": self.input_shape,
                          "quantization": quantization(self.input_quant)},
                "output": {"dtype": np.dtype(self.output_dtype).name, "quantization": quantization(self.output_quant)}}


def load_tflite(path: Path, digest: str, *, layout: str | None = None):
    """A `.tflite` file as a query-only `LoadedModel` (format "tflite", no gradients, no hooks)."""
    from .loading import LoadedModel, _static_hints
    backend = TFLiteQuery(path, layout)
    notes = []
    if backend.layout == "nhwc":
        notes.append("The model takes channels-last input [N, H, W, C] (read from its input shape, or --layout); "
                     "the audit's images are permuted to it.")
    if backend.input_quant is not None:
        scale, zero = backend.input_quant
        notes.append(f"The model is quantized: it takes {np.dtype(backend.input_dtype).name} input (scale {scale:.6g}, "
                     f"zero point {zero}), and the audit's images are quantized to it.")
    elif backend.input_dtype == np.uint8:
        notes.append("The model takes uint8 input without quantization parameters: the audit's images (in [0, 1] "
                     "after --mean/--std) are multiplied by 255 and rounded.")
    if backend.outputs > 1:
        notes.append(f"The model has {backend.outputs} outputs; the first is audited as the scores.")
    batch, pre = _static_hints(to_nchw(backend.input_shape, backend.layout))
    if batch is not None and not backend.resizable():
        notes.append(f"The model runs only at its batch size of {batch} (it refuses to be resized); the audit "
                     "sends it batches of that size.")
    else:
        batch = None
    return LoadedModel(QueryModule(backend), str(path), "tflite", digest, supports_hooks=False, batch_hint=batch,
                       preprocessing=pre, gradients=False, layout=backend.layout, notes=notes,
                       backend=backend.describe())
