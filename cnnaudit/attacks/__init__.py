"""Adversarial attacks, behind one narrow module: the rest of cnnaudit never sees ART's types."""

from .losses import DifferenceOfLogitsRatio, ScaleInvariantCrossEntropy
from .runner import BACKENDS, AttackRunner
from .specs import ATTACKS, AttackSpec

__all__ = ["ATTACKS", "BACKENDS", "AttackRunner", "AttackSpec", "DifferenceOfLogitsRatio",
           "ScaleInvariantCrossEntropy"]
