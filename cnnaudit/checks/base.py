"""What a check is: model + data in, tidy per-sample rows + a summary section + report data out.

The pipeline runs the clean evaluation first (every check needs it: e.g. attacks skip samples the
model already gets wrong), then each check named by --checks. Aggregates in `summary` must be
derivable from `rows`; reporting and gating only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from ..errors import AuditError

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
    options_type: ClassVar[type | None] = None  # a dataclass with a validated() method
    reads_options: ClassVar[tuple[str, ...]] = ()  # other checks' options this one depends on (for --resume)

    def __init__(self, options=None):
        self._options = options  # None: from the audit's configuration

    def resolved_options(self, ctx):
        return self._options.validated() if self._options is not None else type(self).options(ctx.config)

    @classmethod
    def options(cls, config):
        """This check's options from config.options[name], validated: the pipeline calls this for every
        check before loading anything, so a bad flag fails in a second, not after the clean pass."""
        if cls.options_type is None:
            return None
        given = dict(config.options.get(cls.name, {}))
        try:
            opts = cls.options_type(**given)
        except TypeError:
            known = ", ".join(cls.options_type.__dataclass_fields__)
            raise AuditError(f"options for the {cls.name} check ({', '.join(sorted(given))}) include an unknown "
                             f"name; known: {known}.") from None
        return opts.validated()

    @classmethod
    def check_data(cls, opts, dataset, config) -> None:
        """Check options that name data (metadata columns) once the dataset is open; raise AuditError."""
        if hasattr(opts, "check_data"):
            opts.check_data(dataset, config)

    def run(self, ctx: "AuditContext") -> CheckResult:
        raise NotImplementedError
