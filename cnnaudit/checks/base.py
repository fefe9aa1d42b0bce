"""What a check is: model + data in, tidy per-sample rows + a summary section + report data out.

The pipeline runs the clean evaluation first (every check needs it: e.g. attacks skip samples the
model already gets wrong), then each check named by --checks. Aggregates in `summary` must be
derivable from `rows`; reporting and gating only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

if TYPE_CHECKING:
    from ..context import AuditContext


@dataclass
class CheckResult:
    name: str
    rows: pd.DataFrame
    summary: dict
    report: dict = field(default_factory=dict)  # extra, presentation-only data (thumbnails, chart series)
    findings: list[str] = field(default_factory=list)  # what a reviewer must look at, for the verdict


class Check:
    name: ClassVar[str]
    title: ClassVar[str]
    template: ClassVar[str]  # under reports/templates/

    def run(self, ctx: "AuditContext") -> CheckResult:
        raise NotImplementedError
