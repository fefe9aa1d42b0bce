"""Shortcut evidence: artifact regions, counterfactual fills, saliency."""
