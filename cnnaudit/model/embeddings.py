"""What the model "sees": a per-image embedding for slice discovery (and, later, nearest-neighbour
search), from the model itself where its graph allows, else from the image.

- Eager modules (and ONNX and Hugging Face ones, which load as eager modules): the input of the last
  `nn.Linear`, captured by a forward hook: the penultimate representation the classifier reads.
- TorchScript and torch.export graphs cannot be hooked: image features instead, an 8 x 8 greyscale
  thumbnail (64 values) beside brightness, contrast and sharpness. They find what is visible in the
  pixels (a washed-out scanner), not what only the model's representation separates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bias.properties import image_properties

MODEL = "model (input of the last linear layer)"
IMAGE = "image features (8 x 8 thumbnail, brightness, contrast, sharpness)"


def embedding_layer(loaded) -> nn.Module | None:
    """The last nn.Linear of the loaded module (in registration order), or None where hooks are not
    possible or there is no linear layer (a convolutional head)."""
    if not loaded.supports_hooks:
        return None
    linears = [m for m in loaded.module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def image_features(x: torch.Tensor, props: dict | None = None) -> np.ndarray:
    """An 8 x 8 greyscale thumbnail beside brightness, contrast and sharpness; `props` is the batch's
    image_properties when the caller has them already."""
    x = x.float().cpu()
    props = image_properties(x) if props is None else props
    thumb = F.interpolate(x.mean(dim=1, keepdim=True), size=(8, 8), mode="area").flatten(1).numpy()
    extra = np.stack([props["brightness"], props["contrast"], props["sharpness"]], axis=1)
    return np.concatenate([thumb, extra], axis=1).astype(np.float32)


def model_embedding(model, layer: nn.Module | None, x: torch.Tensor) -> np.ndarray | None:
    """(N, D) float32 inputs of `layer` of the AuditedModel `model` for the batch x (on its device), or
    None: no layer, or a captured input without one row per image (a model that reshapes its batch)."""
    if layer is None:
        return None
    captured = []
    handle = layer.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    calls = model.calls(len(x))  # padded calls (AuditedModel.raw): keep the real rows of each
    if len(captured) == len(calls) and all(c.shape[0] == rows for c, (rows, _) in zip(captured, calls)):
        return torch.cat([c[:real] for c, (_, real) in zip(captured, calls)]).flatten(1).float().cpu().numpy()
    return None


def embed_batch(model, layer: nn.Module | None, x: torch.Tensor, device, props: dict) -> tuple:
    """(embedding, source, image features) of one decoded batch: image features are kept beside the model's
    embedding so that a run whose hook fails on some batch can embed every image alike (`stack`)."""
    features = image_features(x, props)
    emb = model_embedding(model, layer, x.to(device))
    return (emb, MODEL, features) if emb is not None else (features, IMAGE, features)


def stack(parts: list[tuple]) -> tuple[np.ndarray, str]:
    """One embedding per image from embed_batch's parts, in order, and their source: the model's when
    every batch had it, else image features for all."""
    if parts and all(source == MODEL for _, source, _ in parts):
        return np.concatenate([emb for emb, _, _ in parts]), MODEL
    return (np.concatenate([f for _, _, f in parts]) if parts else np.zeros((0, 67), np.float32)), IMAGE
