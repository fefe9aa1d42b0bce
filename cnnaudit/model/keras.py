"""Keras 3 models (`.keras`, and legacy `.h5` files Keras 3 can read), run by Keras' torch backend so the
model is a torch module: gradients flow and every attack runs.

What Keras does that a torch model does not, and what is done about it:
- The backend is chosen once per process, at `import keras`, from KERAS_BACKEND: cnnaudit sets it to
  torch when unset, and refuses when Keras was already imported with another backend.
- Keras models take channels-last input `[N, H, W, C]`: the layout is read from `model.inputs[0].shape`
  (`query.static_layout`), or given with `--layout`, and the audit's NCHW images are permuted to it.
- In the torch backend a Keras model is an `nn.Module` whose weights are registered as torch Parameters
  (`_torch_params`, the same tensors the Keras variables hold), so `.to(device)` moves them; but Keras puts
  every tensor it touches on its own default device (CUDA when there is one), so each call runs under
  `keras.device(<the input's device>)`. Its layers are not torch submodules (no nn.Conv2d or nn.Linear
  inside), so Grad-CAM and the model embedding have nothing to hook: supports_hooks is False.
- Keras resolves a file's custom classes from whatever the process registered, and a Lambda layer stores
  Python code: both are refused before loading (cnnaudit never runs a model's own code), and loading
  runs with safe_mode=True besides.
- Keras picks its reader from the file extension: a file named otherwise is read through a link named
  `.keras` or `.h5` after its contents (a zip or HDF5) say which it is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import AuditError, first_line
from .query import ChannelsLast, check_layout, static_layout, to_nchw

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# the packages Keras itself imports classes from when a config names them; anything else is user code
KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp"}
MODEL_CLASSES = {"Sequential", "Functional", "Model"}
_CUSTOM = ("Model file {path!r} uses the custom object {name!r}, whose code is not in the file and which cnnaudit "
           "does not import; re-save the model with Keras 3 built-in layers only as .keras, or export it to ONNX "
           "(tf2onnx) and audit the .onnx file.")
_LAMBDA = ("Model file {path!r} has a Lambda layer ({name!r}), which stores Python code that cnnaudit never runs; "
           "replace it with built-in layers and re-save as .keras, or export the model to ONNX (tf2onnx).")


def import_keras():
    """Keras with the torch backend (KERAS_BACKEND is set to torch when unset, before the import)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except (ImportError, ValueError) as exc:
        if isinstance(exc, ImportError) and importlib.util.find_spec("keras") is None:
            from .loading import _needs_extra
            raise _needs_extra("Keras models", "keras", exc) from None
        # Keras is installed, but the backend KERAS_BACKEND names is not (jax) or does not exist (ValueError)
        why = f"{exc.name} is not installed" if getattr(exc, "name", None) else first_line(exc, 150)
        raise AuditError(f"Keras could not start the {os.environ.get('KERAS_BACKEND')!r} backend that KERAS_BACKEND "
                         f"names ({why}); cnnaudit needs its torch backend, so set KERAS_BACKEND=torch.") from None
    backend = keras.backend.backend()
    if backend != "torch":
        raise AuditError(f"Keras runs with the {backend} backend in this process, but cnnaudit needs its torch "
                         "backend for gradients; set KERAS_BACKEND=torch before Keras is first imported.")
    return keras


def keras_format(path: Path) -> str | None:
    """"keras" for a Keras 3 zip (config.json inside), "keras_h5" for an HDF5 file, else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        return "keras_h5"
    if zipfile.is_zipfile(path) and "config.json" in zipfile.ZipFile(path).namelist():
        return "keras"
    return None


def model_config(path: Path, fmt: str) -> dict:
    """The architecture a Keras file declares (its config.json, or an .h5 file's model_config attribute)."""
    try:
        if fmt == "keras":
            return json.loads(zipfile.ZipFile(path).read("config.json"))
        import h5py
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except Exception as exc:  # noqa: BLE001 - a damaged zip, HDF5 or JSON: the file is not readable
        raise AuditError(f"Model file {str(path)!r} is not a readable Keras file ({first_line(exc, 200)}); save "
                         "it again with model.save('model.keras').") from None
    if raw is None:
        raise AuditError(f"Model file {str(path)!r} is an HDF5 file without a model config (weights only, from "
                         "save_weights, or not a Keras file); save the whole model with model.save('model.keras').")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def custom_object(config) -> tuple[str, str] | None:
    """("custom" or "lambda", name) of the first object in a Keras config that is not one of Keras' own
    (a Lambda layer, a class outside Keras' packages, a registered 'package>Name'), or None."""
    if isinstance(config, list):
        for item in config:
            found = custom_object(item)
            if found:
                return found
        return None
    if not isinstance(config, dict):
        return None
    name = config.get("class_name")
    if isinstance(name, str):
        if name in ("Lambda", "__lambda__"):
            inner = config.get("config")
            return "lambda", inner.get("name", name) if isinstance(inner, dict) else name
        # Keras 3 writes module null for a registered custom class; legacy .h5 configs leave it out entirely
        module = config.get("module", "keras")
        package = module.split(".")[0] if isinstance(module, str) else None
        registered = config.get("registered_name") or name  # 'package>Name' for a registered class
        if package not in KERAS_PACKAGES | {"builtins"} or ">" in registered and \
                registered.split(">")[0] not in KERAS_PACKAGES:
            return "custom", registered
    for key, value in config.items():
        if key in ("compile_config", "training_config"):  # not loaded: compile=False
            continue
        found = custom_object(value) or (_unknown_layer(value) if key == "layers" and isinstance(value, list) else None)
        if found:
            return found
    return None


def _unknown_layer(layers: list) -> tuple[str, str] | None:
    """A layer whose class Keras does not have (legacy .h5 configs name layers without their module)."""
    import keras
    for layer in layers:
        name = layer.get("class_name") if isinstance(layer, dict) else None
        if isinstance(name, str) and name not in MODEL_CLASSES and not hasattr(keras.layers, name):
            return "custom", name
    return None


class KerasModule(nn.Module):
    """A Keras 3 model (torch backend) as a torch module: inference mode, on the input's device."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        import keras
        with keras.device(str(x.device)):
            return self.model(x, training=False)


def input_shape(model) -> list | None:
    """The model's first input shape ([None, H, W, C] for a channels-last image model), or None."""
    try:
        shape = model.inputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return [int(d) if d is not None else None for d in shape]


def _readable_path(path: Path, fmt: str, tmp: str) -> str:
    """A path Keras reads as `fmt`: the file itself, or a link to it with the extension Keras expects."""
    suffixes = (".keras",) if fmt == "keras" else (".h5", ".hdf5")
    if path.suffix.lower() in suffixes:
        return str(path)
    link = Path(tmp) / f"model{suffixes[0]}"
    try:
        link.symlink_to(path.resolve())
    except OSError:  # no symlinks (some Windows setups): a copy
        import shutil
        shutil.copyfile(path, link)
    return str(link)


def load_keras(path: Path, digest: str, *, layout: str | None = None):
    """A `.keras` file (or a legacy `.h5` Keras 3 reads) as a `LoadedModel` with gradients."""
    from .loading import LoadedModel, _static_hints
    path = Path(path)
    fmt = keras_format(path)
    if fmt is None:
        raise AuditError(f"Model file {str(path)!r} is neither a Keras 3 .keras file nor an HDF5 .h5 file; save "
                         "the model with model.save('model.keras').")
    keras = import_keras()
    found = custom_object(model_config(path, fmt))
    if found:
        kind, name = found
        raise AuditError((_LAMBDA if kind == "lambda" else _CUSTOM).format(path=str(path), name=name))
    with tempfile.TemporaryDirectory(prefix="cnnaudit-keras-") as tmp:
        try:
            with keras.device("cpu"):  # on the CPU, as every loader leaves a model: the audit moves it
                model = keras.saving.load_model(_readable_path(path, fmt, tmp), compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises ValueError, TypeError, KeyError, OSError, ...
            fix = ("re-save it with Keras 3 as .keras, or export it to ONNX (tf2onnx)" if fmt == "keras_h5"
                   else "save it again with Keras 3 (model.save('model.keras')), or export it to ONNX (tf2onnx)")
            raise AuditError(f"Model file {str(path)!r} could not be loaded by Keras 3 ({first_line(exc, 200)}); "
                             f"{fix}.") from None
    if not isinstance(model, nn.Module):  # not the torch backend's layer class: cannot happen after import_keras
        raise AuditError(f"Model file {str(path)!r} did not load as a torch module; set KERAS_BACKEND=torch.")
    shape = input_shape(model)
    layout = check_layout(layout) or static_layout(shape) or (
        "nhwc" if keras.config.image_data_format() == "channels_last" else "nchw")
    module = KerasModule(model)
    notes = []
    if layout == "nhwc":
        module = ChannelsLast(module)
        notes.append("The model takes channels-last input [N, H, W, C] (read from its input shape, or --layout); "
                     "the audit's images are permuted to it.")
    batch, pre = _static_hints(to_nchw(shape, layout))
    return LoadedModel(module.eval(), str(path), fmt, digest, supports_hooks=False, batch_hint=batch,
                       preprocessing=pre, layout=layout, notes=notes)
