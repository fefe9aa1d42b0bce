"""`AuditResult`: the summary, the per-sample table and the report, and writing them to a folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .checks.base import CheckResult
from .io import OutputSet


CRASH_LOG = "crash.log"  # the traceback of a run that stopped on an unexpected error (never part of an audit)
SAMPLES, SUMMARY, REPORT, ERRORS = "samples.csv", "summary.json", "report.html", "errors.log"
PLAN = "plan.json"  # --budget's plan, for --plan to replay
FILES = (SAMPLES, SUMMARY, REPORT, ERRORS, CRASH_LOG, PLAN)  # what an audit writes (or removes) in its folder
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """OWASP's CSV-injection rule: a text cell that a spreadsheet would read as a formula (starting with
    = + - @, tab or carriage return) gets a leading apostrophe, which spreadsheets show as text."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


@dataclass
class AuditResult:
    summary: dict
    results: list[CheckResult]
    primary: bool = True  # False on torchrun's ranks other than 0, which hold the same result but do not write
    error_log: str = ""  # tracebacks of the checks that failed, written to errors.log
    thumbnails: dict = field(default_factory=dict)  # sample id -> image data URI, for the findings' strips
    # a multi-label audit: each label's check results ({label: [CheckResult]}); `results` holds the joint check
    per_label: dict = field(default_factory=dict)

    def _parts(self) -> list[tuple[pd.DataFrame, str | None]]:
        """Every check's rows, and for a label's checks (multi-label audits) the label, which `samples` and
        samples.csv put in column `target`."""
        parts = [(r.rows, None) for r in self.results if len(r.rows)]
        for label, results in self.per_label.items():
            parts.extend((r.rows, label) for r in results if len(r.rows))
        return parts

    @property
    def complete(self) -> bool:
        """False when a check failed (summary["errors"] says which): the CLI exits 3."""
        return not self.summary.get("errors")

    @property
    def samples(self) -> pd.DataFrame:
        """Every per-sample row of every check: the single source of truth for all aggregates."""
        frames = [rows if label is None else rows.assign(target=label) for rows, label in self._parts()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _write_samples(self, f, chunk: int = 10_000) -> None:
        """samples.csv a few thousand rows at a time under the union of the columns, rather than through
        `samples`: concatenating, or widening a whole check's rows to the union, would hold a second copy
        of every row (tens of MB per 10,000 images; benchmarks/bench_audit.py measures the peak). It reads back
        as the same table as the concatenation; the text differs only where a check's int column prints as 2
        rather than the concatenation's 2.0."""
        parts = self._parts()
        columns = list(dict.fromkeys([*(c for frame, _ in parts for c in frame.columns),
                                      *(["target"] if any(label for _, label in parts) else [])]))
        header = True
        for frame, label in parts:
            for start in range(0, len(frame), chunk):
                part = frame.iloc[start:start + chunk].reindex(columns=columns)
                if label is not None:
                    part["target"] = label
                for col in part.columns:
                    if part[col].dtype == object or pd.api.types.is_string_dtype(part[col].dtype):
                        part[col] = part[col].map(csv_safe)
                part.to_csv(f, index=False, header=[csv_safe(c) for c in columns] if header else False)
                header = False

    def html(self) -> str:
        from .report.render import render_report
        return render_report(self.summary, self.results, self.thumbnails, per_label=self.per_label)

    def model_card(self, data=None) -> str:
        """A Markdown model card filled with this audit's evidence (report/model_card.py); `data` names the
        evaluation data."""
        from .report.model_card import model_card
        return model_card(self.summary, data=data)

    def stage(self, outputs: OutputSet, folder: str = "") -> dict[str, Path]:
        """Stage samples.csv, summary.json, report.html and errors.log in `folder` of the output set (they
        appear on its commit); an errors.log of an earlier audit there goes."""
        paths = {"samples": outputs.add(folder + SAMPLES, self._write_samples),
                 "summary": outputs.add_json(folder + SUMMARY, self.summary),
                 "report": outputs.add_text(folder + REPORT, self.html())}
        if self.summary.get("plan"):
            from .planning import plan_file
            paths["plan"] = outputs.add_json(folder + PLAN, plan_file(self.summary["plan"], self.summary["seed"]))
        else:
            outputs.remove(folder + PLAN)
        if self.error_log:
            paths["errors"] = outputs.add_text(folder + ERRORS, self.error_log)
        else:  # a stale log from an earlier run in the same folder would mislead
            outputs.remove(folder + ERRORS)
        outputs.remove(folder + CRASH_LOG)  # an earlier run's crash is not this audit's
        return paths

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the audit's files into `out_dir` together: it holds this audit or, if writing is
        interrupted, the previous one (io.OutputSet)."""
        with OutputSet(out_dir) as outputs:
            paths = self.stage(outputs)
            outputs.commit()
        return paths
