"""The one place that knows ART: its PyTorchClassifier around an AuditedModel, and its evasion attacks.

cnnaudit runs FGSM, PGD and APGD in torch (fgsm.py, pgd.py, apgd.py: per-sample early stopping, no
NumPy round-trips); ART supplies AutoAttack, the `--attack-backend art` reference path, and the
cross-check in the tests. Inputs and outputs are torch tensors in [0, 1]; NumPy stays in here.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .losses import losses_for
from .specs import NORMS, AttackSpec

logging.getLogger("art").setLevel(logging.ERROR)  # ART logs every estimator it builds at INFO


class ArtAttacks:
    def __init__(self, model, *, num_classes: int, batch_size: int = 64):
        self.model = model
        self.num_classes = num_classes
        self.batch_size = batch_size
        self._estimators: dict[str, object] = {}

    def estimator(self, loss: str):
        if loss not in self._estimators:
            from art.estimators.classification import PyTorchClassifier
            self._estimators[loss] = PyTorchClassifier(
                model=self.model, loss=losses_for(self.num_classes)[loss](), input_shape=(self.model.channels, *self.model.input_size),
                nb_classes=self.num_classes, clip_values=(0.0, 1.0),
                device_type="gpu" if self.model.device.type == "cuda" else "cpu")
        return self._estimators[loss]

    def _autoattack_two_classes(self, est, eps: float, norm: str) -> list | None:
        """ART's standard AutoAttack list without APGD-DLR, which indexes a third logit, for two-class models:
        APGD on the estimator's own loss (the logit margin, attacks/losses.py), DeepFool and Square, with
        ART's standard settings. None (ART's own list) for three classes or more."""
        if self.num_classes >= 3:
            return None
        from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack
        return [AutoProjectedGradientDescent(est, norm=NORMS[norm], eps=float(eps), eps_step=float(eps) / 4, max_iter=100,
                                             nb_random_init=5, batch_size=self.batch_size, loss_type=None,
                                             verbose=False),
                DeepFool(est, max_iter=100, epsilon=1e-3, nb_grads=2, batch_size=self.batch_size, verbose=False),
                SquareAttack(est, norm=NORMS[norm], max_iter=5000, eps=float(eps), p_init=0.8, nb_restarts=5,
                             verbose=False)]

    def run(self, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str,
            seed: int) -> torch.Tensor:
        """Adversarial examples for (x, y) within the `norm` ball of radius eps, in [0, 1]."""
        from art.attacks.evasion import (AutoAttack, AutoProjectedGradientDescent, FastGradientMethod,
                                         ProjectedGradientDescent)
        if not len(x):
            return x.clone()
        est = self.estimator(spec.loss)
        common = dict(norm=NORMS[norm], eps=float(eps), batch_size=self.batch_size)
        if spec.method == "fgm":
            attack = FastGradientMethod(est, eps_step=float(eps), **common)
        elif spec.method == "pgd":
            attack = ProjectedGradientDescent(est, eps_step=float(eps) * spec.step_size, max_iter=spec.steps,
                                              num_random_init=0 if spec.restarts <= 1 else spec.restarts,
                                              verbose=False, **common)
        elif spec.method == "apgd":
            attack = AutoProjectedGradientDescent(est, eps_step=float(eps) * spec.step_size, max_iter=spec.steps,
                                                  nb_random_init=max(1, spec.restarts), loss_type=None,
                                                  verbose=False, **common)
        elif spec.method == "autoattack":
            attack = AutoAttack(est, eps_step=float(eps) / 4, attacks=self._autoattack_two_classes(est, eps, norm),
                                **common)
        else:
            raise ValueError(f"unknown attack method {spec.method!r}")
        # ART draws its random starts from NumPy's and torch's global generators.
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        y_onehot = np.eye(self.num_classes, dtype=np.float32)[y.cpu().numpy()]
        x_adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32), y=y_onehot)
        return torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).to(x.device)
