"""Per-label decision thresholds: `--threshold 0.5` for every label, or a file of one per label (chosen on
validation data, for example), as TOML (`effusion = 0.3`, at the top or under `[thresholds]`) or CSV
(columns `label` and `threshold`). Thresholds are probabilities: a label is predicted when its sigmoid
probability is above it (for a logit z: z > log(t / (1 - t)))."""

from __future__ import annotations

import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import AuditError


def _probability(value, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if isinstance(value, bool) or not 0 < t < 1:
        raise AuditError(f"{where} is {value!r}; a threshold is a probability strictly between 0 and 1.")
    return t


def read_thresholds(spec: str, labels: list[str]) -> list[float]:
    """One threshold per label, in label order, from --threshold's value."""
    try:
        return [_probability(float(spec), "--threshold")] * len(labels)
    except ValueError:
        pass
    path = Path(spec)
    if not path.is_file():
        raise AuditError(f"--threshold {spec!r} is neither a probability nor a file; give e.g. 0.5, or a TOML or CSV "
                         "file of per-label thresholds.")
    if path.suffix.lower() == ".csv":
        import pandas as pd
        try:
            table = pd.read_csv(path, dtype={"label": str}, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise AuditError(f"--threshold {spec!r} is not a readable CSV ({str(exc).strip()}).") from None
        if not {"label", "threshold"} <= set(table.columns):
            raise AuditError(f"--threshold {spec!r} needs columns 'label' and 'threshold'.")
        given = dict(zip(table["label"].astype(str).str.strip(), table["threshold"]))
    else:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise AuditError(f"--threshold {spec!r} is not valid TOML ({exc}); use label = 0.3 lines, or a CSV.") from None
        given = data.get("thresholds", data)
    unknown = [k for k in given if k not in labels]
    if unknown:
        raise AuditError(f"--threshold {spec!r} names {unknown[0]!r}, which is not one of the labels "
                         f"({', '.join(labels)}); fix the name.")
    missing = [k for k in labels if k not in given]
    if missing:
        raise AuditError(f"--threshold {spec!r} has no threshold for label {missing[0]!r}; give every label one.")
    return [_probability(given[k], f"the threshold of label {k!r} in {spec!r}") for k in labels]


def logit(t: float) -> float:
    """The logit a label's output is compared with: its decision is z > logit(t)."""
    return math.log(t) - math.log1p(-t)
