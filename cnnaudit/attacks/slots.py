"""The loop every iterative attack shares: a fixed-width working set of samples, refilled as samples finish.

Why: an attack stops a sample at its first misclassified iterate, so a batch attacked on its own shrinks
step by step, and its later passes run on a few samples, where a pass costs several times more per
sample (ResNet-18 forward+backward on 2 CPU cores: 1.3 ms a sample at batch 64, 3.5 at 8, 9 at 2). Here
a finished sample's slot goes to the next sample waiting, so every pass but those of the last few
samples runs `width` wide. Nothing about a sample's attack depends on its neighbours: its state is its
own, its random start is seeded by its id (ball.random_start), and an eval-mode model treats the
samples of a batch independently. Each sample therefore follows the same trajectory as when attacked
alone, up to float rounding of batched kernels.

A sample leaves its slot when an iterate is misclassified (that iterate is its example), or after
`steps` steps of its last restart (the final iterate is its example, stored without another pass: the
caller verifies every example with a prediction of its own). After the steps of an earlier restart the
final iterate is evaluated in the next pass; if it still stands, the sample goes back to the front of
the queue for its next restart.

The host waits for the device once per pass, to read which samples were hit (a `width`-long bool
vector; nothing image-sized leaves the device). Everything the next pass needs from the host (slot
positions, step counters, random starts) is sent right after that read, while the device is idle.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np
import torch

from .ball import loss_and_gradient

State = dict[str, torch.Tensor]  # per-slot tensors, first dimension the slot; "x0", "y" and "cur" at least,
# "target" for a targeted loss


def attack_in_slots(model, loss_fn, x: torch.Tensor, y: torch.Tensor, *, width: int, steps: int, restarts: int,
                    init: Callable[[np.ndarray, int], State],
                    advance: Callable[[State, torch.Tensor, torch.Tensor, torch.Tensor], State]) -> torch.Tensor:
    """Adversarial examples for every sample of x.

    init(positions, restart): the state of samples x[positions] at the start of `restart`.
    advance(state, loss, grad, k): the state after a step from iterate k (per slot), given the loss and
    its input gradient at the current iterate."""
    if steps < 1:
        raise ValueError("an iterative attack needs at least one step")
    device, last = x.device, max(1, restarts) - 1
    x_adv = x.clone()
    queue = deque((i, 0) for i in range(len(x)))
    state, idx, r = _start(queue, width, init)  # per slot, on the host: sample position, restart, step
    k = np.zeros(len(idx), dtype=np.int64)
    pos = torch.as_tensor(idx, device=device)
    while len(idx):
        loss, grad, pred = loss_and_gradient(model, loss_fn, state["cur"], state["y"], state.get("target"))
        x_adv[pos] = state["cur"]
        hit = np.array((pred != state["y"]).tolist(), dtype=bool)  # the pass's one host read
        ended = ~hit & (k == steps)  # only earlier restarts get here: their final iterate, evaluated
        for i, rr in reversed(list(zip(idx[ended].tolist(), r[ended].tolist()))):
            queue.appendleft((i, rr + 1))
        keep = np.flatnonzero(~hit & (k < steps))
        final = (k[keep] + 1 == steps) & (r[keep] == last)  # their next iterate ends the attack
        stay = keep[~final]
        fresh, new_idx, new_r = _start(queue, width - len(stay), init)
        keep_t, final_t, stay_t, k_t = (torch.as_tensor(a, device=device) for a in (
            keep, np.flatnonzero(final), np.flatnonzero(~final), k[keep]))
        idx, k, r = (np.concatenate([idx[stay], new_idx]), np.concatenate([k[stay] + 1, np.zeros_like(new_idx)]),
                     np.concatenate([r[stay], new_r]))
        next_pos = torch.as_tensor(idx, device=device)
        # the host's work for this step is done; the device's follows
        state = advance({name: v[keep_t] for name, v in state.items()}, loss[keep_t], grad[keep_t], k_t)
        x_adv[pos[keep_t][final_t]] = state["cur"][final_t]
        state = _joined({name: v[stay_t] for name, v in state.items()}, fresh)
        pos = next_pos
    return x_adv


def _start(queue: deque, free: int, init) -> tuple[State, np.ndarray, np.ndarray]:
    """The state of the next `free` queued samples (each restart's together, in queue order)."""
    new = [queue.popleft() for _ in range(min(free, len(queue)))]
    state: State = {}
    idx, r = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    for restart in sorted({rr for _, rr in new}):
        pick = np.array([i for i, rr in new if rr == restart], dtype=np.int64)
        state = _joined(state, init(pick, restart))
        idx, r = np.concatenate([idx, pick]), np.concatenate([r, np.full(len(pick), restart, dtype=np.int64)])
    return state, idx, r


def _joined(a: State, b: State) -> State:
    if not a or not b:
        return a or b
    return {name: torch.cat([a[name], b[name]]) for name in a}
