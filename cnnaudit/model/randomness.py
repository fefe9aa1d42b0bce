"""Is the model randomized at inference (input noise, dropout or batch-norm left in training mode)?

An audit of a randomized model that takes one draw per prediction measures one draw of a random
function: its robust accuracy is inflated by attacks that follow noisy gradients (Athalye et al. 2018).
So the clean evaluation predicts a seeded subset twice more and compares: predictions that change, or
logits that move beyond float noise, make the model `stochastic`, and the attacks then use
Expectation over Transformation (attacks/eot.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ..attacks.eot import EOT_DRAWS
from ..data.sampling import seeded_subset

PROBE_IMAGES = 64
# float noise: batched kernels and non-deterministic GPU reductions move fp32 logits by ~1e-6 relative;
# half-precision weights by ~1e-3
_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 1e-2}
_FP32_TOLERANCE = 1e-4


def probe_randomness(ctx, rows) -> dict:
    """{stochastic, prediction_agreement, randomness_probe_n, max_logit_change, eot_draws} on a seeded subset
    of the clean rows: the clean pass's predictions and two more draws."""
    subset = seeded_subset(rows["sample_id"].to_numpy(), PROBE_IMAGES, ctx.config.seed + 1)
    first = rows.set_index("sample_id").loc[subset, "prediction"].to_numpy()
    draws = [[], []]
    with torch.no_grad():
        for batch in ctx.batches(subset, progress=False):
            x = batch.x.to(ctx.device)
            for d in draws:
                d.append(ctx.model(x).float().cpu())
    a, b = torch.cat(draws[0]), torch.cat(draws[1])
    scale = float(torch.maximum(a.abs().max(), b.abs().max()).clamp_min(1e-6)) if len(a) else 1.0
    change = float((a - b).abs().max()) / scale if len(a) else 0.0
    same = (first == a.argmax(dim=1).numpy()) & (first == b.argmax(dim=1).numpy())
    tolerance = _TOLERANCE.get(ctx.model.input_dtype, _FP32_TOLERANCE)
    stochastic = bool(not same.all() or change > tolerance)
    return {"stochastic": stochastic, "prediction_agreement": round(float(np.mean(same)), 6) if len(same) else None,
            "randomness_probe_n": int(len(subset)), "max_logit_change": round(change, 8),
            "eot_draws": EOT_DRAWS if stochastic else None}
