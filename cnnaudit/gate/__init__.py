"""The release gate: a policy of named rules over summary metrics, judged against an audit's summary."""

from .judge import judge
from .metrics import catalog, diff
from .policy import Rule, load_policy

__all__ = ["Rule", "catalog", "diff", "judge", "load_policy"]
