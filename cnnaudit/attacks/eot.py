"""Expectation over Transformation (Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of
Security", section 4.3) for models that are randomized at inference (input noise, dropout left on).

One draw of such a model is one sample of a random function: an attack that follows one draw's gradient
follows noise, and an example that fools one draw may not fool the next. So, for a randomized model:
- the attack direction is the gradient of the loss averaged over `draws` forward/backward passes
  (ball.loss_and_gradient), and
- an example counts as broken only when most of `draws` fresh draws misclassify it (`vote`, used by
  predict.predict and by the attacks' own early stopping).
Deterministic models are never wrapped, so nothing about them changes.
"""

from __future__ import annotations

import torch
from torch import nn

EOT_DRAWS = 9  # odd, so "most of the draws" is never a tie


class Draws(nn.Module):
    """A randomized AuditedModel seen through `draws` draws; forward is one draw."""

    def __init__(self, model: nn.Module, draws: int):
        super().__init__()
        self.model = model
        self.draws = int(draws)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train(self, mode: bool = True) -> "Draws":
        self.training = mode  # never propagates: see AuditedModel.train
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def channels(self) -> int:
        return self.model.channels

    @property
    def input_size(self) -> tuple[int, int]:
        return self.model.input_size


def with_draws(model: nn.Module, draws: int) -> nn.Module:
    return Draws(model, draws) if draws > 1 else model


def vote(preds: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One prediction per sample from (draws, N) predictions: the label when more than half of the draws
    predict it, else the most frequent wrong class (so `vote != y` exactly when most draws misclassify)."""
    counts = torch.nn.functional.one_hot(preds, num_classes).sum(dim=0)  # (N, C)
    right = counts.gather(1, y[:, None])[:, 0] * 2 > preds.shape[0]
    wrong = counts.scatter(1, y[:, None], -1).argmax(dim=1)
    return torch.where(right, y, wrong)
