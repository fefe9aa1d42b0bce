"""Counter-based random numbers: every (sample key, stream, element) pair has its own value, on any device.

Written by hand because torch's generators are sequential and per device: what a sample draws would
depend on its position in the batch, the batch size, the device and the number of processes. Here a
value is a hash (SplitMix64's finaliser, Steele et al. 2014) of the sample's key and the element's index,
so an image gets the same corruption however it is batched or sharded, and generation stays batched
on the model's device.
"""

from __future__ import annotations

import math

import torch

from ..seeds import sample_seed


def _signed(v: int) -> int:
    return v - 2**64 if v >= 2**63 else v


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(h: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's is arithmetic)."""
    return (h >> s) & ((1 << (64 - s)) - 1)


def _mix_(h: torch.Tensor) -> torch.Tensor:
    """The finaliser, in place: these tensors hold a value per pixel, and each op's copy costs as much as
    the op (allocating a result per op is measurably slower at 224 px)."""
    h ^= _shr(h, 30)
    h *= _M1  # int64 products wrap modulo 2^64, as the finaliser needs
    h ^= _shr(h, 27)
    h *= _M2
    h ^= _shr(h, 31)
    return h


def sample_keys(seed: int, sample_ids, salt: str, device) -> torch.Tensor:
    """One 63-bit key per sample, from (seed, sample id, salt) only."""
    return torch.tensor([sample_seed(seed, sid, salt) for sid in sample_ids], dtype=torch.int64, device=device)


def uniform(keys: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """Uniform in (0, 1), shape (N, *shape), float32; `stream` separates independent draws."""
    n = math.prod(shape)
    base = _mix_(keys ^ _mix_(torch.tensor(stream + 1, device=keys.device, dtype=torch.int64) * _GOLDEN))
    h = torch.arange(1, n + 1, device=keys.device, dtype=torch.int64).mul_(_GOLDEN)[None, :] + base[:, None]
    h = _mix_(h).bitwise_right_shift_(40).bitwise_and_((1 << 24) - 1)  # the top 24 bits
    return h.to(torch.float32).add_(0.5).div_(float(1 << 24)).view(len(keys), *shape)


def normal(keys: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """Standard normal (Box-Muller over two uniform streams)."""
    u1, u2 = uniform(keys, shape, 2 * stream), uniform(keys, shape, 2 * stream + 1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
