"""What the labels of a multi-label audit share: the model's forward passes and the decoded batches.

Each label is audited as a two-class model (`label_model`), so the same clean, corruption, shift and
occlusion batches reach the user's model once per label. `SharedForward` remembers the model's outputs
per input batch (by a hash of its bytes) for calls without gradients, so the first label's pass computes
them and the others read them; `BatchCache` keeps decoded batches for the next label. Neither changes a
number: a cached output is the output of the same bytes, and a batch is the same pixels. Calls that need
the model itself bypass the cache: with gradients (attacks, saliency), with forward hooks registered
(embeddings), and for a randomized model (cnnaudit.model.randomness), whose draws must differ.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from ..model.outputs import unwrap
from ..model.wrapper import AuditedModel

OUTPUT_CACHE_BYTES = 256 * 2**20  # outputs are K floats an image: millions of images' worth
BATCH_CACHE_BYTES = 2 * 2**30  # decoded pixels: about 3,500 images of 3 x 224 x 224; more are decoded again


def _key(x: torch.Tensor) -> tuple:
    data = x.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    return tuple(x.shape), str(x.dtype), hashlib.blake2b(data, digest_size=16).hexdigest()


class SharedForward(nn.Module):
    """The user's module, its outputs for gradient-free calls remembered by input bytes (least recently used
    first out), unwrapped from their container (a tuple, a dict with 'logits')."""

    def __init__(self, module: nn.Module, max_bytes: int = OUTPUT_CACHE_BYTES):
        super().__init__()
        self.module = module
        self.enabled = True
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self._cache: OrderedDict = OrderedDict()

    def _hooked(self) -> bool:
        from torch.nn.modules import module as m
        if m._global_forward_hooks or m._global_forward_pre_hooks:
            return True
        return any(getattr(s, "_forward_hooks", None) or getattr(s, "_forward_pre_hooks", None)
                   for s in self.module.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or torch.is_grad_enabled() or self._hooked():
            return unwrap(self.module(x))[0]
        key = _key(x)
        out = self._cache.get(key)
        if out is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return out
        out = unwrap(self.module(x))[0].detach()
        self.misses += 1
        self._cache[key] = out
        self.bytes += out.numel() * out.element_size()
        while self.bytes > self.max_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        return out


class LabelHead(nn.Module):
    """One label's output of the shared module, as a single logit shifted by the label's threshold: z - logit(t),
    so its sign is the label's decision and the audit reads it as a binary head (`single_logit`). Sigmoid
    probabilities are turned into their logits first."""

    def __init__(self, shared: SharedForward, index: int, shift: float, probabilities: bool):
        super().__init__()
        self.shared, self.index, self.shift, self.probabilities = shared, index, float(shift), probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shared(x)[:, self.index].float()
        if self.probabilities:
            out = torch.log(out.clamp_min(1e-12)) - torch.log((1 - out).clamp_min(1e-12))
        return out - self.shift


def label_model(joint: AuditedModel, index: int, shift: float) -> AuditedModel:
    """Label `index` of the joint model as a two-class AuditedModel with the joint model's preprocessing,
    static batch size and padding: class 1 when its probability is above its threshold."""
    shared = joint.model
    view = AuditedModel(LabelHead(shared, index, shift, joint.output_kind == "probabilities"),
                        mean=joint.mean.flatten().tolist(), std=joint.std.flatten().tolist(), channels=joint.channels,
                        input_size=joint.input_size, output_kind="single_logit", num_classes=2, positive_index=1,
                        fixed_batch=joint.fixed_batch, input_dtype=joint.input_dtype).to(joint.device)
    view.pad_single, view.output_shape, view.gradients = joint.pad_single, (), joint.gradients
    return view


class BatchCache:
    """Decoded batches of one call's sample ids, for the next label's identical call (the labels of one
    check run one after another). Labels (`y`) are not kept: each label's view supplies its own."""

    def __init__(self, max_bytes: int | None = None):
        max_bytes = BATCH_CACHE_BYTES if max_bytes is None else max_bytes
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self.images_decoded, self.images_reused = 0, 0
        self._cache: OrderedDict = OrderedDict()

    @staticmethod
    def key(root, ids: np.ndarray, *parts) -> tuple:
        return (str(root), hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes(),
                                           digest_size=16).hexdigest(), *parts)

    def get(self, key):
        batches = self._cache.get(key)
        if batches is not None:
            self._cache.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return batches

    def put(self, key, batches: list) -> None:
        size = sum(b.x.numel() * b.x.element_size() for b in batches)
        if size > self.max_bytes:
            return
        self._cache[key] = batches
        self.bytes += size
        while self.bytes > self.max_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self.bytes -= sum(b.x.numel() * b.x.element_size() for b in old)
