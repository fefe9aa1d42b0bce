"""Saliency maps, as illustration (the verdict comes from the causal tests).

- Grad-CAM (Selvaraju et al. 2017) where the model is an eager module with a Conv2d: forward hooks on
  the last convolution. Written by hand (~20 lines) rather than adding pytorch-grad-cam or captum.
- Occlusion (Zeiler & Fergus 2014) for everything else (TorchScript and exported programs have no
  hooks): the drop in the target logit when a patch is replaced by the image mean, patch by patch.
- `randomized_top_layer`: a copy of the model with its last Linear layer's weights re-drawn, for the
  saliency sanity check of Adebayo et al. 2018 (maps must change when the model does).
All maps are (N, H, W), non-negative, at the input size.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def last_conv(model: nn.Module) -> nn.Module | None:
    if isinstance(model, torch.jit.ScriptModule):
        return None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and not isinstance(m, torch.jit.ScriptModule)]
    return convs[-1] if convs else None


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # A model with a static batch size runs in padded chunks (AuditedModel.raw): one chunk per call here, so
    # the hooked activation is that chunk's, and its first len(x) rows are the real images.
    b = getattr(model, "fixed_batch", None)
    if b and len(x) > b:
        return torch.cat([gradcam(model, layer, xc, tc) for xc, tc in zip(x.split(b), target.split(b))])
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(act=o))
    try:
        with torch.enable_grad():
            logits = model(x)
            act = store["act"]
            score = logits.gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    act, grad = act[:len(x)].float(), grad[:len(x)].float()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, grid: int = 8) -> torch.Tensor:
    n, _, h, w = x.shape
    base = model(x).gather(1, target[:, None])[:, 0]
    fill = x.mean(dim=(2, 3), keepdim=True)
    out = torch.zeros(n, h, w, device=x.device)
    ys = torch.linspace(0, h, grid + 1).round().long().tolist()
    xs = torch.linspace(0, w, grid + 1).round().long().tolist()
    for i in range(grid):
        for j in range(grid):
            xo = x.clone()
            xo[:, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = fill
            drop = (base - model(xo).gather(1, target[:, None])[:, 0]).clamp(min=0)
            out[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = drop.view(-1, 1, 1)
    return out


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, str]:
    layer = last_conv(model)
    if layer is not None:
        return gradcam(model, layer, x, target), "grad-cam"
    return occlusion(model, x, target), "occlusion"


def mass_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's total inside its mask (NaN where the map is all zero)."""
    total = maps.flatten(1).sum(dim=1)
    inside = (maps * masks[:, 0].float()).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.full_like(total, float("nan")))


def randomized_top_layer(model: nn.Module, seed: int) -> nn.Module | None:
    """A deep copy with the last Linear layer re-initialised, or None if there is none to randomise."""
    try:
        twin = copy.deepcopy(model)
    except Exception:
        return None
    linears = [m for m in twin.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    g = torch.Generator().manual_seed(seed)
    top = linears[-1]
    with torch.no_grad():
        top.weight.copy_(torch.randn(top.weight.shape, generator=g).to(top.weight) * top.weight.std())
        if top.bias is not None:
            top.bias.zero_()
    return twin
