"""Turn model outputs into per-sample result columns; shared by every check that evaluates a condition."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AuditError

RESULT_COLUMNS = ["prediction", "correct", "confidence", "loss"]
_NOT_FINITE = ("The model returned NaN or infinite outputs; check the model file and the --mean/--std/--input-size "
               "preprocessing flags.")


def outputs_to_columns(logits: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    logits = logits.detach().float()
    if not torch.isfinite(logits).all():
        raise AuditError(_NOT_FINITE)
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
    """Result columns for x; for a randomized model seen through eot.Draws, by majority vote of its draws."""
    x = x.to(model.device)
    draws = getattr(model, "draws", 1)
    if draws == 1:
        return outputs_to_columns(model(x), y)
    return voted_columns(torch.stack([model(x).detach().float() for _ in range(draws)]), y)


def voted_columns(logits: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Columns from (draws, N, C) logits: the prediction is the vote (eot.vote), confidence and loss come from
    the probabilities averaged over the draws."""
    from .attacks.eot import vote
    if not torch.isfinite(logits).all():
        raise AuditError(_NOT_FINITE)
    y = y.to(logits.device)
    pred = vote(logits.argmax(dim=2), y, logits.shape[2])
    probs = logits.softmax(dim=2).mean(dim=0)
    pred_np = pred.cpu().numpy()
    return {
        "prediction": pred_np.astype(np.int64),
        "correct": pred_np == y.cpu().numpy(),
        "confidence": probs.gather(1, pred[:, None])[:, 0].cpu().numpy().astype(np.float64),
        "loss": (-probs.gather(1, y[:, None])[:, 0].clamp_min(1e-12).log()).cpu().numpy().astype(np.float64),
    }
