"""Turning a user's model file into an `AuditedModel`: [0, 1] pixels in, logits out."""

from .loading import LoadedModel, load_model
from .wrapper import AuditedModel

__all__ = ["AuditedModel", "LoadedModel", "load_model"]
