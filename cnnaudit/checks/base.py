"""What a check is: model + data in, tidy per-sample rows + a summary section + report data out.

A check declares itself where it is defined (`@register`, checks/registry.py): its name, title and
template, the checks whose results it reads (`requires`, and `after` for ones it reads when they ran),
extra data it needs (`inputs`), its options class, its per-image `outcomes` and its summary section's type
(`section`, a TypedDict: summary.schema.json is generated from these). The pipeline runs them in an order computed from
those declarations (clean first: every check needs it, e.g. attacks skip samples the model already gets
wrong), hands each the results it declared, and checkpoints whatever it returns. Aggregates in `summary`
must be derivable from `rows`; reporting and gating only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from ..errors import AuditError
from ..options import OptionError, validate

if TYPE_CHECKING:
    from ..context import AuditContext


@dataclass
class CheckResult:
    name: str
    rows: pd.DataFrame
    summary: dict
    report: dict = field(default_factory=dict)  # extra, presentation-only data (thumbnails, chart series)
    findings: list = field(default_factory=list)  # Finding records (findings.py); a plain sentence becomes a note
    outputs: dict = field(default_factory=dict)  # anything else it produced for the pipeline (JSON values, frames)

    def __post_init__(self):
        from ..findings import coerce
        self.findings = [coerce(f, self.name) for f in self.findings]  # plain JSON: checkpointed, ranked, rendered


class Check:
    name: ClassVar[str]
    title: ClassVar[str]
    template: ClassVar[str]  # under reports/templates/, or under template_dir
    template_dir: ClassVar[str | None] = None  # a plugin's own templates folder (None: cnnaudit's)
    requires: ClassVar[tuple[str, ...]] = ("clean",)  # checks whose results run() reads; they run first
    after: ClassVar[tuple[str, ...]] = ()  # checks whose results run() reads when they ran (not run for it)
    # Per-image outcomes: boolean columns of its rows, one row per image and `condition`, True where the model
    # got the image right under that condition (clean's: right on the image as it is). Declaring them is all a
    # check does to reach the sample explorer (images it broke), robustness disparity (which group loses
    # more), the paired release comparison and the model card; none of them lists checks by name.
    outcomes: ClassVar[tuple[str, ...]] = ()
    finding_kinds: ClassVar[tuple[str, ...]] = ()  # the kinds of its findings, besides findings.GENERIC_KINDS
    reads_outcomes: ClassVar[bool] = False  # run() reads the rows of every check that declares outcomes and ran
    inputs: ClassVar[tuple[str, ...]] = ()  # data besides the audited set it needs, e.g. ("train_data",)
    options_type: ClassVar[type | None] = None  # a dataclass of option() fields (cnnaudit/options.py)
    section: ClassVar[type | None] = None  # its summary section's type (a TypedDict): the schema is generated from it
    reads_options: ClassVar[tuple[str, ...]] = ()  # other checks' options this one depends on (for --resume)
    lower_is_better: ClassVar[tuple[str, ...]] = ()  # prefixes of its gate metrics where smaller is better
    rule_kinds: ClassVar[tuple] = ()  # gate rule kinds judging its section (gate/rules.py: RuleKind)
    # its cost grows with the images it is given and its results are proportions over them, so --budget may give
    # it a subset (planning.py): a nested, class-stratified prefix of the readable images, paired with clean
    plannable: ClassVar[bool] = False

    @classmethod
    def is_plannable(cls, opts) -> bool:
        """Whether --budget may give it a subset with these options (default: `plannable`)."""
        return cls.plannable

    @staticmethod
    def half_width(section: dict) -> float | None:
        """The precision of its results, as --budget reports it: the widest interval half-width of its
        section (by default over the `*_ci` pairs of its top level and its `results` rows)."""
        from ..planning import widest_half_width
        return widest_half_width(section) if not section.get("failed") else None

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        """Its gateable numbers under flat names `<check>.<...>`, from its summary section (gate/metrics.py:
        regression rules and `cnnaudit diff`)."""
        return {}

    @classmethod
    def card_metrics(cls, section: dict) -> list[dict]:
        """Its headline numbers for the model card's `model-index` header (report/model_card.py), as
        {type, name, value}; by default every gate metric (`metrics`) under its own name."""
        return [{"type": key, "name": key, "value": value} for key, value in cls.metrics(section).items()]

    @staticmethod
    def incomparable(baseline: dict, candidate: dict) -> str | None:
        """Why its numbers in two audits' sections do not compare (None: they do): a `max_regression` rule
        on its metrics then has no evidence, and `cnnaudit compare` pairs none of its conditions."""
        return None

    @staticmethod
    def verdicts(section: dict) -> dict[str, str]:
        """Its categorical verdicts (subject -> verdict) from its summary section, for `cnnaudit compare`'s
        verdict changes: a shortcut that appeared, masking that went away."""
        return {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:  # a concrete check: the declarations the pipeline and report rely on
            missing = [a for a in ("name", "title", "template") if not isinstance(getattr(cls, a, None), str)]
            if missing:
                raise TypeError(f"check class {cls.__qualname__} does not declare {', '.join(missing)} (class "
                                "attributes, strings)")

    def __init__(self, options):
        self.opts = options  # an options_type instance, validated (options_from), or None without options_type

    @classmethod
    def options_from(cls, config):
        """This check's options from config.options[name], validated (cnnaudit/options.py): the pipeline
        calls this for every check before loading anything, so a bad option fails in a second, not after
        the clean pass."""
        if cls.options_type is None:
            if config.options.get(cls.name):
                raise AuditError(f"the {cls.name} check has no options; remove {cls.name}=... from the settings.")
            return None
        return validate(cls.name, cls.options_type, config.options.get(cls.name, {}))

    @classmethod
    def check_data(cls, opts, dataset, config) -> None:
        """Check options that name data (metadata columns) once the dataset is open (the options class's
        `check_data`, if it has one); raise OptionError."""
        if hasattr(opts, "check_data"):
            try:
                opts.check_data(dataset, config)
            except OptionError as exc:
                exc.check, exc.where = cls.name, f"the {cls.name} option {exc.option!r}"
                raise

    def summarize(self, rows: pd.DataFrame, results: dict[str, CheckResult], classes: list[str],
                  attributes: list[str]) -> dict | None:
        """The aggregates of its summary section computed from its rows alone (and the rows of what it
        requires): run() uses it, and the contract test recomputes them from a finished result's rows.
        None: not declared (its summary is not only row aggregates)."""
        return None

    def run(self, ctx: "AuditContext", results: dict[str, CheckResult]) -> CheckResult:
        """The check on ctx's model and data; `results` holds the results of `requires` (and of `after`,
        and with `reads_outcomes` of the checks that declare outcomes, where they ran), by name."""
        raise NotImplementedError
