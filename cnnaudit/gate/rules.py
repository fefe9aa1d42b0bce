"""Moved to cnnaudit/rules.py (checks declare their rule kinds there, below the gate); this name stays for
check plugins written for 0.6, which import RuleKind and the verdict helpers from here."""

from ..rules import (EVIDENCE_MODES, NUMBER, Rule, RuleKind, evidence_mode, parse_eps, result,  # noqa: F401
                     selected, without_evidence)
