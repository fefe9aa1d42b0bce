"""Corruption robustness: does the model still work in rain, snow and at night?

Inputs: the wrapped model, every readable sample with its clean prediction, a list of corruptions and
severities (corruptions/: physically motivated rain, snow and low light, and the ImageNet-C families).
Procedure: per batch on the model's device, each corruption at each severity, keyed by (seed, sample id)
so an image gets the same corruption in any batch or process; one forward pass each.
Outputs: one row per sample, corruption and severity (condition `<corruption>_<severity>`) with the
prediction and whether it is unchanged from clean (`consistent`). Accuracy with Wilson intervals per
corruption x severity, per class and per subgroup, the mean over severities, the drop relative to clean,
ImageNet-C's corruption error (unnormalised: cnnaudit has no AlexNet baseline; compare runs with
`cnnaudit diff`), and prediction consistency, all derived from the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import aggregate
from ..corruptions import CORRUPTIONS, DEFAULT, SEVERITIES, corrupt
from ..errors import AuditError
from ..predict import predict
from ..report.images import to_data_uri
from .base import Check, CheckResult

GRID_IMAGES = 4  # images in the "what does snow 3 look like" grid


@dataclass
class CorruptionOptions:
    corruptions: tuple[str, ...] = DEFAULT
    severities: tuple[int, ...] = SEVERITIES

    def validated(self) -> "CorruptionOptions":
        names = list(CORRUPTIONS) if list(self.corruptions) == ["all"] else list(self.corruptions)
        unknown = [c for c in names if c not in CORRUPTIONS]
        if unknown or not names:
            raise AuditError(f"--corruptions has {(unknown or [''])[0]!r}; choose from {', '.join(CORRUPTIONS)} "
                             "or 'all'.")
        bad = [s for s in self.severities if int(s) not in SEVERITIES]
        if bad or not self.severities:
            raise AuditError(f"--severities has {(bad or [''])[0]!r}; severities are 1 to 5.")
        return CorruptionOptions(tuple(names), tuple(sorted({int(s) for s in self.severities})))


def condition_name(corruption: str, severity: int) -> str:
    return f"{corruption}_{severity}"


class CorruptionCheck(Check):
    name = "corruption"
    title = "Corruption robustness"
    template = "sections/corruption.html.j2"
    options_type = CorruptionOptions

    def run(self, ctx) -> CheckResult:
        opts = self.resolved_options(ctx)
        seed = ctx.config.seed
        clean = ctx.clean_rows.set_index("sample_id")

        def evaluate(batch) -> list[pd.DataFrame]:
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            clean_pred = clean.loc[batch.sample_ids, "prediction"].to_numpy()
            parts = []
            for name in opts.corruptions:
                for severity in opts.severities:
                    xc = corrupt(x, name, severity, seed=seed, sample_ids=batch.sample_ids)
                    assert xc.shape == x.shape and float(xc.min()) >= 0.0 and float(xc.max()) <= 1.0
                    cols = predict(ctx.model, xc, y)
                    parts.append(pd.DataFrame({"sample_id": batch.sample_ids, "corruption": name,
                                               "severity": severity, **cols,
                                               "consistent": cols["prediction"] == clean_pred}))
            return parts

        rows = self._assemble_rows(ctx, [p for parts in ctx.map_batches(evaluate, desc="corruption") for p in parts])
        summary = summarize_corruption(rows, ctx.clean_rows, opts, ctx.classes, ctx.dataset.attributes)
        report = {"grid": self._grid(ctx, opts), "failures": self._failures(ctx, rows, opts),
                  "kpis": _kpis(summary)}
        findings = [f"Under {c.replace('_', ' ')} accuracy falls by {100 * d:.0f}% of clean on average over severities."
                    for c, d in summary["relative_drop"].items() if d is not None and d >= 0.2]
        return CheckResult(self.name, rows, summary, report=report, findings=findings)

    def _assemble_rows(self, ctx, parts) -> pd.DataFrame:
        res = pd.concat(parts, ignore_index=True).sort_values(["corruption", "severity", "sample_id"], kind="stable")
        res = res.reset_index(drop=True)
        rows = ctx.base_rows(res["sample_id"])
        rows["check"] = self.name
        rows["condition"] = aggregate.shared_labels(condition_name, res["corruption"], res["severity"])
        for col in ("corruption", "severity", "prediction"):
            rows[col] = res[col].to_numpy()
        rows["prediction_name"] = [ctx.classes[p] for p in res["prediction"]]
        for col in ("correct", "confidence", "loss", "consistent"):
            rows[col] = res[col].to_numpy()
        rows["correct"] = rows["correct"].astype(bool)
        rows["consistent"] = rows["consistent"].astype(bool)
        return rows

    def _grid(self, ctx, opts) -> dict:
        """The same few images (distinct classes, first in sample order) under every corruption and severity."""
        clean = ctx.clean_rows
        picked = clean.drop_duplicates("label").head(GRID_IMAGES)["sample_id"].to_numpy()
        batch = next(ctx.batches(picked, progress=False), None)
        if batch is None or not len(batch.sample_ids):
            return {"images": [], "rows": []}
        x = batch.x.to(ctx.device)
        out = []
        for name in opts.corruptions:
            cells = [[to_data_uri(img) for img in corrupt(x, name, s, seed=ctx.config.seed,
                                                          sample_ids=batch.sample_ids)] for s in opts.severities]
            out.append({"corruption": name, "cells": cells})
        return {"images": [to_data_uri(img) for img in x], "rows": out,
                "labels": [ctx.classes[int(c)] for c in batch.y]}

    def _failures(self, ctx, rows, opts) -> list[dict]:
        """Clean correct, corrupted wrong, most confident first; one per image, re-corrupted by its key."""
        ok = ctx.clean_rows.set_index("sample_id")["correct"].astype(bool)
        wrong = rows[~rows["correct"] & ok.reindex(rows["sample_id"]).to_numpy()]
        top = (wrong.sort_values(["confidence", "sample_id"], ascending=[False, True], kind="stable")
               .drop_duplicates("sample_id").head(ctx.config.gallery_size))
        images = {int(sid): x for b in ctx.batches(top["sample_id"].to_numpy(), progress=False)
                  for sid, x in zip(b.sample_ids, b.x)}  # one decoding pass for the whole gallery
        out = []
        for r in top.itertuples():
            x = images[int(r.sample_id)]
            xc = corrupt(x[None].to(ctx.device), r.corruption, r.severity, seed=ctx.config.seed,
                         sample_ids=[r.sample_id])
            out.append({"sample_id": int(r.sample_id), "path": r.path, "corruption": r.corruption,
                        "severity": int(r.severity), "original": to_data_uri(x),
                        "corrupted": to_data_uri(xc[0]), "label": r.label_name, "prediction": r.prediction_name,
                        "confidence": float(r.confidence)})
        return out


def summarize_corruption(rows: pd.DataFrame, clean_rows: pd.DataFrame, opts, classes, attributes) -> dict:
    clean_acc = aggregate.accuracy(clean_rows)["accuracy"]
    results = []
    for (name, severity), g in rows.groupby(["corruption", "severity"], sort=False):
        acc = aggregate.accuracy(g)
        results.append({"corruption": name, "severity": int(severity), "accuracy": acc["accuracy"],
                        "accuracy_ci": acc["accuracy_ci"], "consistency": round(float(g["consistent"].mean()), 6),
                        "n": acc["n"]})
    order = {c: i for i, c in enumerate(opts.corruptions)}
    results.sort(key=lambda r: (order[r["corruption"]], r["severity"]))
    mean, drop, ce, rel_ce, consistency = {}, {}, {}, {}, {}
    for name in opts.corruptions:
        accs = [r["accuracy"] for r in results if r["corruption"] == name]
        mean[name] = round(sum(accs) / len(accs), 6)
        drop[name] = round((clean_acc - mean[name]) / clean_acc, 6) if clean_acc else None
        ce[name] = round(1 - mean[name], 6)  # ImageNet-C's CE before normalising by AlexNet's
        rel_ce[name] = round(clean_acc - mean[name], 6)  # mean error minus clean error
        consistency[name] = round(sum(r["consistency"] for r in results if r["corruption"] == name) / len(accs), 6)
    per_class = aggregate.accuracy_by(rows, ["corruption", "severity", "label_name"])
    per_group = []
    for attr in aggregate.group_columns(rows, attributes):
        for r in aggregate.accuracy_by(rows.assign(value=rows[attr].astype(str)), ["corruption", "severity", "value"]):
            per_group.append({"attribute": attr, **r})
    return {"corruptions": list(opts.corruptions), "severities": list(opts.severities), "clean_accuracy": clean_acc,
            "results": results, "mean": mean, "relative_drop": drop, "corruption_error": ce,
            "relative_corruption_error": rel_ce, "consistency": consistency,
            "per_class": [{**{k: v for k, v in r.items() if k != "label_name"}, "class": r["label_name"]}
                          for r in per_class],
            "per_group": per_group}


def _kpis(summary) -> list[dict]:
    worst = min(summary["mean"], key=lambda c: summary["mean"][c])
    return [{"value": f"{100 * summary['mean'][worst]:.1f}%",
             "label": f"accuracy under {worst.replace('_', ' ')} (mean over severities)"}]
