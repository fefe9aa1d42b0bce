"""What a check is: model + data in, tidy per-sample rows + a summary section + report data out.

A check declares itself where it is defined (`@register`, checks/registry.py): its name, title and
template, the checks whose results it reads (`requires`, and `after` for ones it reads when they ran),
extra data it needs (`inputs`) and its options class. The pipeline runs them in an order computed from
those declarations (clean first: every check needs it, e.g. attacks skip samples the model already gets
wrong), hands each the results it declared, and checkpoints whatever it returns. Aggregates in `summary`
must be derivable from `rows`; reporting and gating only read them.
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
    outputs: dict = field(default_factory=dict)  # anything else it produced for the pipeline (JSON values, frames)


class Check:
    name: ClassVar[str]
    title: ClassVar[str]
    template: ClassVar[str]  # under reports/templates/, or under template_dir
    template_dir: ClassVar[str | None] = None  # a plugin's own templates folder (None: cnnaudit's)
    requires: ClassVar[tuple[str, ...]] = ("clean",)  # checks whose results run() reads; they run first
    after: ClassVar[tuple[str, ...]] = ()  # checks whose results run() reads when they ran (not run for it)
    inputs: ClassVar[tuple[str, ...]] = ()  # data besides the audited set it needs (none of the built-ins yet)
    options_type: ClassVar[type | None] = None  # a dataclass with a validated() method
    reads_options: ClassVar[tuple[str, ...]] = ()  # other checks' options this one depends on (for --resume)
    lower_is_better: ClassVar[tuple[str, ...]] = ()  # prefixes of its gate metrics where smaller is better

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        """Its gateable numbers under flat names `<check>.<...>`, from its summary section (gate/metrics.py:
        regression rules and `cnnaudit diff`)."""
        return {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:  # a concrete check: the declarations the pipeline and report rely on
            missing = [a for a in ("name", "title", "template") if not isinstance(getattr(cls, a, None), str)]
            if missing:
                raise TypeError(f"check class {cls.__qualname__} does not declare {', '.join(missing)} (class "
                                "attributes, strings)")

    def __init__(self, options=None):
        self._options = options  # validated by the pipeline; None: read from the audit's configuration

    def resolved_options(self, ctx):
        return self._options if self._options is not None else type(self).options(ctx.config)

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

    def run(self, ctx: "AuditContext", inputs: dict[str, CheckResult]) -> CheckResult:
        """The check on ctx's model and data; `inputs` holds the results of `requires` (and of `after`
        where they ran), by name."""
        raise NotImplementedError
