"""Per-image outcomes, read the same way for every check that declares them (Check.outcomes).

A check's outcome column is boolean, one value per image and condition, True where the model got the image
right under the condition; its rows also carry the `prediction` (class index) and `confidence` shown under
that condition, as `cnnaudit.predict.predict` returns them. The sample explorer (images a condition
broke), robustness disparity (which group loses more under a condition), the paired release comparison
and the model card all read outcomes through `outcome_rows`, so a new check reaches them by declaring its columns, and no list of check names
is kept anywhere else. The clean check's outcome is the reference the others are compared with.
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

REFERENCE = "clean"  # the check whose outcome every other is compared with (it always runs)


def condition_label(condition: str, column: str) -> str:
    """The condition's name as the explorer, disparity and comparison show it: the condition for a check's
    `correct` outcome, "condition (column)" for any other outcome column it declares."""
    return condition if column == "correct" else f"{condition} ({column})"


def outcome_rows(results, *, reference: bool = False, columns=None) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """(check, condition label, rows) for every condition of every finished check that declares outcomes,
    in the order of `results`; each frame's `correct` column is the outcome as booleans. `reference`: the
    clean check's rows too. `columns`: keep only these (those present) besides sample_id and correct,
    before splitting by condition (the corruption check's rows are conditions × images long)."""
    from .registry import registry
    reg = registry()
    for result in results:
        check = reg.get(result.name)
        if check is None or not check.outcomes or result.summary.get("failed") or not len(result.rows):
            continue
        if result.name == REFERENCE and not reference:
            continue
        for column in check.outcomes:
            if column not in result.rows:  # declared but not written: the contract suite fails such a check
                continue
            keep = ["sample_id", "condition", column] + [c for c in (columns or result.rows.columns)
                                                          if c in result.rows and c not in ("sample_id", "condition",
                                                                                             column, "correct")]
            frame = result.rows[keep].rename(columns={column: "correct"})
            frame["correct"] = frame["correct"].fillna(False).astype(bool)  # no outcome is not a right answer
            for condition, rows in frame.groupby("condition", sort=False):
                yield result.name, condition_label(str(condition), column), rows
