"""Load what users actually have: TorchScript, torch.export programs, state dicts (torch or safetensors),
ONNX files, Hugging Face `save_pretrained` folders and pickled modules.

The format is read from the file's contents, not its extension, because `.pt` means four of them; only
ONNX (a protobuf without a magic number) is known by its `.onnx` extension. ONNX, timm and Hugging Face
support are optional extras (`pip install 'cnnaudit[onnx]'`, `[timm]`, `[hf]`): their imports live in
the functions that need them, and a missing one is an error naming the pip command.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import AuditError, first_line


@dataclass
class LoadedModel:
    module: nn.Module
    path: str
    format: str  # torchscript | export | state_dict | safetensors | onnx | huggingface | pickle | module
    sha256: str | None
    supports_hooks: bool  # eager modules expose layers for Grad-CAM; scripted/exported ones do not
    batch_hint: int | None = None  # a static batch size the file declares (export, ONNX)
    # what the file says about its input (channels, input_size, mean, std): defaults for flags not given
    preprocessing: dict = field(default_factory=dict)
    gradients: bool = True  # False for query-only models (model/query.py): forward passes, no gradients
    layout: str = "nchw"  # the input layout the model file takes (an NHWC one is fed through a permute)
    # what was said while loading (a fallback taken, a converter's warnings): shown as notes in the report
    notes: list[str] = field(default_factory=list)
    backend: dict = field(default_factory=dict)  # a query-only backend's description (model/query.py)


def _needs_extra(what: str, extra: str, exc: ImportError) -> AuditError:
    return AuditError(f"{what} need the optional {extra} support ({exc.name or exc} is not installed); "
                      f"install it with: pip install 'cnnaudit[{extra}]'")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of_folder(path: Path) -> str:
    """A digest over every file of a model folder: names and contents, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_of(f).encode())
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + n <= path.stat().st_size


def sniff_format(path: Path) -> str:
    """torchscript, export, onnx, tflite, keras, keras_h5, safetensors or torch_save, from the file's contents
    (ONNX, which has no magic number, by extension)."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
    from .keras import HDF5_MAGIC
    from .tflite import is_tflite
    if is_tflite(path):
        return "tflite"
    with open(path, "rb") as f:
        if f.read(8) == HDF5_MAGIC:  # a legacy Keras .h5 model
            return "keras_h5"
    if zipfile.is_zipfile(path) and {"config.json", "metadata.json"} <= set(zipfile.ZipFile(path).namelist()):
        return "keras"  # a Keras 3 .keras archive (config.json, metadata.json, model.weights.h5)
    if _is_safetensors(path):
        return "safetensors"
    if not zipfile.is_zipfile(path):
        # Legacy (pre-1.6) torch.save files are plain pickles, not zips.
        return "torch_save"
    names = zipfile.ZipFile(path).namelist()
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("models/model.json") or "serialized_exported_program" in n for n in names):
        return "export"
    return "torch_save"


def build_architecture(arch: str, num_classes: int | None, channels: int | None = None) -> nn.Module:
    """`torchvision:resnet18`, `timm:resnet18` or `package.module:factory`, called with num_classes when it
    takes it. Nothing is downloaded: torchvision gets weights=None, timm pretrained=False."""
    if ":" not in arch:
        raise AuditError(f"--arch {arch!r} must look like 'torchvision:resnet18', 'timm:resnet18' or "
                         "'package.module:factory'.")
    module_name, factory_name = arch.split(":", 1)
    if module_name == "timm":
        try:
            import timm
        except ImportError as exc:
            raise _needs_extra("timm architectures (--arch timm:NAME)", "timm", exc) from None
        kwargs = {"pretrained": False}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if channels is not None:
            kwargs["in_chans"] = channels
        try:
            return timm.create_model(factory_name, **kwargs)
        except RuntimeError as exc:  # timm's "Unknown model (NAME)"
            raise AuditError(f"--arch {arch!r}: {exc}; see timm.list_models() for the names.") from None
    if module_name == "torchvision":
        module_name = "torchvision.models"
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise AuditError(f"--arch {arch!r}: cannot import {factory_name!r} from {module_name!r} ({exc}); "
                         "check the spelling and that the package is installed.") from None
    kwargs = {}
    params = inspect.signature(factory).parameters
    if module_name == "torchvision.models":
        kwargs["weights"] = None  # never download: the user's state dict supplies the weights
    if num_classes is not None and ("num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())):
        kwargs["num_classes"] = num_classes
    return factory(**kwargs)


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor] | None:
    """A state dict, possibly nested under a training checkpoint's 'state_dict'/'model' key."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            # DataParallel / DDP checkpoints prefix every key with 'module.'.
            if all(k.startswith("module.") for k in obj):
                obj = {k[len("module."):]: v for k, v in obj.items()}
            return obj
    return None


def _graph_input_shape(module: nn.Module) -> list | None:
    """The first image input's shape as recorded in an exported graph (ints where static, else None)."""
    if not isinstance(module, torch.fx.GraphModule):
        return None
    for node in module.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(val, torch.Tensor) and val.ndim == 4:
            return [d if isinstance(d, int) else None for d in val.shape]
    return None


def _static_hints(shape: list | None) -> tuple[int | None, dict]:
    """(static batch size, {channels, input_size}) from an NCHW input shape with None for dynamic dims."""
    if not shape or len(shape) != 4:
        return None, {}
    batch, c, h, w = shape
    pre = {}
    if c in (1, 3):
        pre["channels"] = c
    if h and w:
        pre["input_size"] = (int(h), int(w))
    return batch, pre


def _json_config(file: Path) -> dict | None:
    """A Hugging Face folder's JSON file (config.json, preprocessor_config.json), None when absent."""
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"{str(file)!r} is not valid JSON ({exc}); fix or remove it.") from None


def _hf_preprocessing(folder: Path) -> dict:
    """mean, std and input size from a Hugging Face preprocessor_config.json, when there is one."""
    cfg = _json_config(folder / "preprocessor_config.json")
    if cfg is None:
        return {}
    pre = {}
    if cfg.get("do_normalize", True) and cfg.get("image_mean") is not None and cfg.get("image_std") is not None:
        mean, std = cfg["image_mean"], cfg["image_std"]
        pre["mean"] = [float(v) for v in (mean if isinstance(mean, list) else [mean])]
        pre["std"] = [float(v) for v in (std if isinstance(std, list) else [std])]
    size = cfg.get("crop_size") if cfg.get("do_center_crop") and cfg.get("crop_size") else cfg.get("size")
    if isinstance(size, int):
        pre["input_size"] = (size, size)
    elif isinstance(size, dict):
        if size.get("height") and size.get("width"):
            pre["input_size"] = (int(size["height"]), int(size["width"]))
        elif size.get("shortest_edge"):
            pre["input_size"] = (int(size["shortest_edge"]),) * 2
    return pre


def _refuse_custom_code(folder: Path) -> None:
    """Refuse a folder whose config asks transformers to import code (`auto_map`, or a `.py` it names).

    With such a config transformers asks "Do you wish to run the custom code? [y/N]" on the terminal in the
    middle of an audit, and a "y" runs the folder's Python: cnnaudit promises that loading a model runs
    no code from it, so it refuses before transformers sees the folder (trust_remote_code=False is also
    passed, so a config this misses is refused by transformers, not run).
    """
    for name in ("config.json", "preprocessor_config.json"):
        file = folder / name
        cfg = _json_config(file)
        if isinstance(cfg, dict) and (cfg.get("auto_map") or cfg.get("custom_pipelines")):
            key = "auto_map" if cfg.get("auto_map") else "custom_pipelines"
            raise AuditError(f"{str(file)!r} has an {key!r} entry, which makes transformers run Python code "
                             "from the model folder, and cnnaudit never runs a model's own code; save the model "
                             "with save_pretrained() from a built-in transformers architecture, or export it to "
                             "ONNX or TorchScript.")


def _load_huggingface(folder: Path) -> LoadedModel:
    if not (folder / "config.json").is_file():
        raise AuditError(f"Model path {str(folder)!r} is a folder without config.json; pass a model file, or a "
                         "folder written by a Hugging Face model's save_pretrained().")
    _refuse_custom_code(folder)
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as exc:
        raise _needs_extra("Hugging Face model folders", "hf", exc) from None
    try:  # local files only: nothing is downloaded, and no code from the folder runs (trust_remote_code off)
        module = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True,
                                                                 trust_remote_code=False)
    except Exception as exc:
        raise AuditError(f"{str(folder)!r} could not be loaded as a Hugging Face image classifier "
                         f"({first_line(exc)}); "
                         "save it with save_pretrained() from an *ForImageClassification model.") from None
    return LoadedModel(module.eval(), str(folder), "huggingface", sha256_of_folder(folder), supports_hooks=True,
                       preprocessing=_hf_preprocessing(folder))


def load_model(path: str | Path, *, arch: str | None = None, num_classes: int | None = None,
               unsafe_pickle: bool = False, channels: int | None = None, layout: str | None = None,
               query_only: bool = False) -> LoadedModel:
    path = Path(path)
    if path.is_dir():
        return _load_huggingface(path)
    if not path.is_file():
        raise AuditError(f"Model file {str(path)!r} does not exist; pass the path of a saved model, or an inference "
                         "endpoint's URL (http://HOST:PORT/v2/models/NAME).")
    fmt = sniff_format(path)
    digest = sha256_of(path)
    if fmt == "onnx":
        from .onnxfile import load_onnx
        return load_onnx(path, digest, layout=layout, query_only=query_only)
    if fmt == "tflite":
        from .tflite import load_tflite
        return load_tflite(path, digest, layout=layout)
    if fmt in ("keras", "keras_h5"):
        from .keras import load_keras
        return load_keras(path, digest, layout=layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice is not the user's problem
        if fmt == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
            return LoadedModel(module.eval(), str(path), "torchscript", digest, supports_hooks=False)
        if fmt == "export":
            if not unsafe_pickle:  # torch.export.load unpickles constants and weights with weights_only=False
                raise AuditError(f"Model file {str(path)!r} is a torch.export program, which torch loads with pickle "
                                 "(it can run code from the file), so cnnaudit refuses unless you pass "
                                 "--unsafe-pickle; or save the model with torch.jit.save, as ONNX, or as a state "
                                 "dict with --arch.")
            try:
                module = torch.export.load(str(path)).module()
            except Exception as exc:
                raise AuditError(f"Model file {str(path)!r} looks like a torch.export program but failed to "
                                 f"load ({exc}); re-save it with torch.export.save.") from None
            # Exported programs are traced in the mode they were exported in and refuse .eval().
            batch, pre = _static_hints(_graph_input_shape(module))
            return LoadedModel(module, str(path), "export", digest, supports_hooks=False, batch_hint=batch,
                               preprocessing=pre)
        if fmt == "safetensors":
            from safetensors.torch import load_file
            try:
                obj = load_file(str(path), device="cpu")
            except Exception as exc:
                raise AuditError(f"Model file {str(path)!r} is not a readable safetensors file ({exc}).") from None
            return _from_state_dict(obj, path, digest, arch, num_classes, channels, "safetensors")
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:
            obj = None
            if not unsafe_pickle:
                raise AuditError(
                    f"Model file {str(path)!r} is a pickled Python object; loading it runs code from the file, "
                    "so cnnaudit refuses unless you pass --unsafe-pickle (or save it with torch.jit.save or "
                    "torch.export.save, or save its state_dict and pass --arch).") from None
        if obj is None:
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=False)
            except Exception as exc:
                raise AuditError(f"Model file {str(path)!r} could not be unpickled ({exc}); make sure the "
                                 "classes it needs are importable.") from None
            if not isinstance(obj, nn.Module):
                raise AuditError(f"Model file {str(path)!r} holds a {type(obj).__name__}, not an nn.Module.")
            return LoadedModel(obj.eval(), str(path), "pickle", digest, supports_hooks=True)

    return _from_state_dict(obj, path, digest, arch, num_classes, channels, "state_dict")


def _from_state_dict(obj, path: Path, digest: str, arch, num_classes, channels, fmt: str) -> LoadedModel:
    state = _unwrap_state_dict(obj)
    if state is None:
        raise AuditError(f"Model file {str(path)!r} is neither TorchScript, a torch.export program nor a "
                         "state dict; save the model with torch.jit.save or torch.export.save.")
    if arch is None:
        raise AuditError(f"Model file {str(path)!r} is a state dict (weights only); pass --arch "
                         "(e.g. torchvision:resnet18, timm:resnet18 or package.module:factory) and --num-classes.")
    module = build_architecture(arch, num_classes, channels)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise AuditError(f"The weights in {str(path)!r} do not fit --arch {arch}"
                         f"{f' with --num-classes {num_classes}' if num_classes else ''} ({detail[:300]}); "
                         "check --arch and --num-classes.") from None
    return LoadedModel(module.eval(), str(path), fmt, digest, supports_hooks=True)


def from_module(module: nn.Module) -> LoadedModel:
    """An in-memory model handed to the Python API."""
    is_script = isinstance(module, torch.jit.ScriptModule)
    try:
        module = module.eval()
    except Exception:  # exported GraphModules refuse .eval()
        pass
    batch, pre = _static_hints(_graph_input_shape(module))
    return LoadedModel(module, "<in-memory module>", "torchscript" if is_script else "module", None,
                       supports_hooks=not is_script, batch_hint=batch, preprocessing=pre)
