"""Turn model outputs into per-sample result columns; shared by every check that evaluates a condition."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AuditError

RESULT_COLUMNS = ["prediction", "correct", "confidence", "loss"]


def outputs_to_columns(logits: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    logits = logits.detach().float()
    if not torch.isfinite(logits).all():
        raise AuditError("The model returned NaN or infinite outputs; check the model file and the "
                         "--mean/--std/--input-size preprocessing flags.")
    probs = logits.softmax(dim=1)
    conf, pred = probs.max(dim=1)
    loss = F.cross_entropy(logits, y.to(logits.device), reduction="none")
    pred = pred.cpu().numpy()
    return {
        "prediction": pred.astype(np.int64),
        "correct": pred == y.cpu().numpy(),
        "confidence": conf.cpu().numpy().astype(np.float64),
        "loss": loss.cpu().numpy().astype(np.float64),
    }


@torch.no_grad()
def predict(model, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    return outputs_to_columns(model(x.to(model.device)), y)
