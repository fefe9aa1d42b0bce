"""Adversarial robustness: the check (check.py), its options (options.py) and the sanity checks that say
whether its evidence can be trusted (sanity.py)."""

from ...attacks.ball import check_bounds
from ...budgets import eps_label, parse_budget
from .check import AdversarialCheck, condition_name, pooled_batches, saved_8bit, summarize_adversarial
from .options import CASCADES, DEFAULT_EPS, THOROUGH, AdversarialOptions, spec
from .sanity import gradient_free_check, masking_verdict, sanity_checks

__all__ = ["CASCADES", "DEFAULT_EPS", "THOROUGH", "AdversarialCheck", "AdversarialOptions", "check_bounds",
           "condition_name", "eps_label", "gradient_free_check", "masking_verdict", "parse_budget",
           "pooled_batches", "sanity_checks", "saved_8bit", "spec", "summarize_adversarial"]
