"""Adversarial attacks, behind one narrow module: the rest of cnnaudit never sees ART's types."""

from .art_backend import ATTACKS, AttackRunner
from .losses import DifferenceOfLogitsRatio, ScaleInvariantCrossEntropy

__all__ = ["ATTACKS", "AttackRunner", "DifferenceOfLogitsRatio", "ScaleInvariantCrossEntropy"]
