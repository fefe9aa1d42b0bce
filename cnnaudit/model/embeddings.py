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


def image_features(x: torch.Tensor) -> np.ndarray:
    x = x.float().cpu()
    grey = x.mean(dim=1, keepdim=True)
    thumb = F.interpolate(grey, size=(8, 8), mode="area").flatten(1).numpy()
    props = image_properties(x)
    extra = np.stack([props["brightness"], props["contrast"], props["sharpness"]], axis=1)
    return np.concatenate([thumb, extra], axis=1).astype(np.float32)


def embed(model, layer: nn.Module | None, x: torch.Tensor) -> tuple[np.ndarray, str]:
    """(N, D) float32 embeddings of the batch x (on the model's device) and where they come from. A layer
    whose captured input does not have one row per image (a model that reshapes its batch) falls back
    to image features."""
    if layer is not None:
        captured = []
        handle = layer.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0].detach()))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
        if captured and captured[-1].shape[0] == len(x):
            return captured[-1].flatten(1).float().cpu().numpy(), MODEL
    return image_features(x), IMAGE
