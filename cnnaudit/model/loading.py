"""Load what users actually have: TorchScript, torch.export programs, state dicts, pickled modules.

The format is read from the file's contents, not its extension, because `.pt` means all four.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AuditError


@dataclass
class LoadedModel:
    module: nn.Module
    path: str
    format: str  # torchscript | export | state_dict | pickle | module
    sha256: str | None
    supports_hooks: bool  # eager modules expose layers for Grad-CAM; scripted/exported ones do not


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sniff_format(path: Path) -> str:
    """torchscript, export or torch_save, from the zip archive's member names."""
    if not zipfile.is_zipfile(path):
        # Legacy (pre-1.6) torch.save files are plain pickles, not zips.
        return "torch_save"
    names = zipfile.ZipFile(path).namelist()
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("models/model.json") or "serialized_exported_program" in n for n in names):
        return "export"
    return "torch_save"


def build_architecture(arch: str, num_classes: int | None) -> nn.Module:
    """`torchvision:resnet18` or `package.module:factory`, called with num_classes when it takes it."""
    if ":" not in arch:
        raise AuditError(f"--arch {arch!r} must look like 'torchvision:resnet18' or 'package.module:factory'.")
    module_name, factory_name = arch.split(":", 1)
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


def load_model(path: str | Path, *, arch: str | None = None, num_classes: int | None = None,
               unsafe_pickle: bool = False) -> LoadedModel:
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"Model file {str(path)!r} does not exist; pass the path of a saved model.")
    fmt = sniff_format(path)
    digest = sha256_of(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice is not the user's problem
        if fmt == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
            return LoadedModel(module.eval(), str(path), "torchscript", digest, supports_hooks=False)
        if fmt == "export":
            try:
                module = torch.export.load(str(path)).module()
            except Exception as exc:
                raise AuditError(f"Model file {str(path)!r} looks like a torch.export program but failed to "
                                 f"load ({exc}); re-save it with torch.export.save.") from None
            # Exported programs are traced in the mode they were exported in and refuse .eval().
            return LoadedModel(module, str(path), "export", digest, supports_hooks=False)
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

    state = _unwrap_state_dict(obj)
    if state is None:
        raise AuditError(f"Model file {str(path)!r} is neither TorchScript, a torch.export program nor a "
                         "state dict; save the model with torch.jit.save or torch.export.save.")
    if arch is None:
        raise AuditError(f"Model file {str(path)!r} is a state dict (weights only); pass --arch "
                         "(e.g. torchvision:resnet18 or package.module:factory) and --num-classes.")
    module = build_architecture(arch, num_classes)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise AuditError(f"The weights in {str(path)!r} do not fit --arch {arch}"
                         f"{f' with --num-classes {num_classes}' if num_classes else ''} ({detail[:300]}); "
                         "check --arch and --num-classes.") from None
    return LoadedModel(module.eval(), str(path), "state_dict", digest, supports_hooks=True)


def from_module(module: nn.Module) -> LoadedModel:
    """An in-memory model handed to the Python API."""
    is_script = isinstance(module, torch.jit.ScriptModule)
    try:
        module = module.eval()
    except Exception:  # exported GraphModules refuse .eval()
        pass
    return LoadedModel(module, "<in-memory module>", "torchscript" if is_script else "module", None,
                       supports_hooks=not is_script)
