"""The report's sample explorer: every misclassified or broken sample in one table, filterable by class,
condition, group and discovered slice. It reads the checks' rows (presentation only, nothing is
recomputed): clean rows that are wrong, and the rows of every check that declares per-image outcomes
(Check.outcomes: attacks, corruptions, shifts, a plugin's conditions) whose sample was right clean and is
wrong under the condition (broken). Capped at MAX_ROWS (clean errors first, then by condition)
so a 10,000-image report stays small; the caption says how many were left out.

The filter is a small inline script, allowed by its hash in the report's Content-Security-Policy (no
other script can run); without JavaScript the controls stay hidden and the table reads as is."""

from __future__ import annotations

import base64
import hashlib

import pandas as pd

from .. import aggregate
from ..checks.outcomes import outcome_rows

MAX_ROWS = 2000
# Filters rows by the selects' values; a row's data-group lists its "attribute=value" pairs, "|"-separated.
SCRIPT = """(function(){var f=document.getElementById('explorer-filter');if(!f)return;f.hidden=false;
var rows=[].slice.call(document.querySelectorAll('#explorer tbody tr'));
var sels=[].slice.call(f.querySelectorAll('select'));
function keep(r,s){if(!s.value)return true;var v=r.getAttribute('data-'+s.name)||'';
return s.name==='group'?v.split('|').indexOf(s.value)>=0:v===s.value;}
function apply(){var n=0;rows.forEach(function(r){var ok=sels.every(function(s){return keep(r,s);});
r.hidden=!ok;if(ok)n++;});document.getElementById('explorer-shown').textContent=String(n);}
f.addEventListener('change',apply);apply();})();"""


def script_hash() -> str:
    """The CSP source for SCRIPT: 'sha256-<base64 digest>'."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii") + "'"


def explorer(results, summary: dict) -> dict:
    """{rows: [{sample_id, path, label, prediction, condition, confidence, groups, slice}], n_total, options}."""
    by_name = {r.name: r for r in results if not r.summary.get("failed")}
    clean = by_name["clean"].rows
    attrs = aggregate.group_columns(clean, [a for a in summary["data"]["attributes"] if a in clean])
    was_right = clean.set_index("sample_id")["correct"].astype(bool)
    parts = [clean[~clean["correct"].astype(bool)]]
    columns = ["path", "label_name", "prediction", "confidence", *attrs]
    for _, condition, rows in outcome_rows(results, columns=columns):
        broken = rows[~rows["correct"] & was_right.reindex(rows["sample_id"]).to_numpy()]
        parts.append(broken.assign(condition=condition))
    slices = {}
    if "subgroups" in by_name and "slice" in by_name["subgroups"].rows:
        r = by_name["subgroups"].rows
        slices = dict(zip(r["sample_id"], r["slice"]))
    cols = ["sample_id", "path", "label_name", "prediction", "condition", "confidence", *attrs]
    table = pd.concat([p[[c for c in cols if c in p]] for p in parts], ignore_index=True)
    n_total = len(table)
    table = table.head(MAX_ROWS)
    classes = summary["data"]["classes"]
    out = []
    for row in table.to_dict("records"):
        groups = [f"{a}={row[a]}" for a in attrs if a in row and pd.notna(row[a]) and str(row[a]) != ""]
        out.append({"sample_id": int(row["sample_id"]), "path": row["path"], "label": row["label_name"],
                    "prediction": classes[int(row["prediction"])], "condition": row["condition"],
                    "confidence": float(row["confidence"]), "groups": groups,
                    "slice": slices.get(row["sample_id"], "") or ""})
    return {"rows": out, "n_total": n_total, "max_rows": MAX_ROWS,
            "options": {"class": sorted({r["label"] for r in out}, key=classes.index),
                        "condition": list(dict.fromkeys(r["condition"] for r in out)),
                        "group": sorted({g for r in out for g in r["groups"]}),
                        "slice": sorted({r["slice"] for r in out if r["slice"]})}}
