"""Corruption robustness: does the model still work in rain, snow and at night?

Inputs: the wrapped model, every readable sample with its clean prediction, a list of corruptions and
severities (corruptions/: physically motivated rain, snow and low light, the ImageNet-C families, and
geometric ones: translate, rotate, zoom, and the opt-in flips, which have one level).
Procedure: per batch on the model's device, each corruption at each severity, keyed by (seed, sample id)
so an image gets the same corruption in any batch or process; one forward pass each.
Outputs: one row per sample, corruption and severity (condition `<corruption>_<severity>`) with the
prediction and whether it is unchanged from clean (`consistent`). Accuracy with Wilson intervals per
corruption x severity, per class and per subgroup, the mean over severities, the drop relative to clean,
ImageNet-C's corruption error (unnormalised: cnnaudit has no AlexNet baseline; compare runs with
`cnnaudit diff`), and prediction consistency, all derived from the rows.
"""

from __future__ import annotations

from typing import Any, TypedDict

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import aggregate
from ..schema import CI, Count, Share
from ..corruptions import CORRUPTIONS, DEFAULT, GROUPS, SEVERITIES, corrupt, levels
from ..errors import AuditError
from ..findings import Finding, fmt_p, id_prefix
from ..stats import ALPHA
from ..rules import NUMBER, RuleKind, result
from ..stats import holm, mcnemar_exact, newcombe_paired_ci
from ..options import option
from ..predict import predict
from ..datauri import to_data_uri
from .base import Check, CheckResult
from .registry import register

GRID_IMAGES = 4  # images in the "what does snow 3 look like" grid


@dataclass
class CorruptionOptions:
    corruptions: tuple[str, ...] = option(DEFAULT, flag="--corruptions", many=True, choices=tuple(CORRUPTIONS),
                                          groups=GROUPS, help="corruptions, comma-separated; the groups 'all' "
                                          "(every one but the flips), 'weather' and 'geometric' (translate, rotate, "
                                          f"zoom) stand for their members (default: {','.join(DEFAULT)})")
    severities: tuple[int, ...] = option(SEVERITIES, flag="--severities", many=True, parse=int, sort=True,
                                         choices=tuple(SEVERITIES), expects="severities are integers 1 to 5",
                                         help="severities 1-5, comma-separated (default: 1,2,3,4,5)")


def condition_name(corruption: str, severity: int) -> str:
    return f"{corruption}_{severity}"


def _judge_drop(rule, cor: dict) -> dict:
    """max_corruption_drop: the drop relative to clean of one corruption, or of their mean."""
    p, which = rule.params, rule.params.get("corruption", "mean")
    drops = {k: v for k, v in cor["relative_drop"].items() if v is not None}
    if which == "mean":
        v = round(sum(drops.values()) / len(drops), 6) if drops else None
    elif which in drops:
        v = drops[which]
    else:
        raise AuditError(f"rule {rule.name!r} names corruption {which!r}, which the audit did not run (it ran "
                         f"{', '.join(cor['corruptions'])}); add it with --corruptions or fix the rule.")
    return result(rule, f"corruption.relative_drop.{which}", v, p["threshold"], v is not None and v <= p["threshold"],
                  f"accuracy drop under {which} {v:.4f} of clean (maximum {p['threshold']})")


def _drop_about(rule, cor: dict) -> list[str]:
    """A drop over the limit under one corruption is about its corruption_cliff finding (waivers); the mean over
    corruptions is about none, so it cannot be waived."""
    which = rule.params.get("corruption", "mean")
    return [] if which == "mean" else [id_prefix("corruption", "corruption_cliff", which)]


def _plan_drop(rule, opts, attributes) -> None:
    which = rule.params.get("corruption", "mean")
    if which != "mean" and which not in opts.corruptions:
        raise AuditError(f"rule {rule.name!r} names corruption {which!r}, which the audit will not run "
                         f"({', '.join(opts.corruptions)}); add it with --corruptions or fix the rule.")


# --- summary.json's `corruption` section (Check.section: the published schema is generated from it) ---
class CorruptionResult(TypedDict):
    """Accuracy under one corruption at one severity: its interval, the images it broke and fixed against
    clean, and the Holm-adjusted p-value of that change."""
    corruption: Any
    severity: int
    accuracy: Share
    accuracy_ci: CI
    n: Count
    n_broken: Count
    n_fixed: Count
    p_adjusted: float | None


class CorruptionSection(TypedDict):
    """Corruption robustness: accuracy per corruption and severity, the mean over severities and the drop
    relative to clean, per corruption."""
    corruptions: Any
    severities: list[int]
    results: list[CorruptionResult]
    mean: Any
    relative_drop: Any


@register
class CorruptionCheck(Check):
    name = "corruption"
    plannable = True  # --budget may give it a subset of the images (planning.py)
    title = "Corruption robustness"
    template = "sections/corruption.html.j2"
    section = CorruptionSection
    outcomes = ("correct",)  # right on the image under the corruption and severity (condition)
    finding_kinds = ("corruption_cliff",)
    options_type = CorruptionOptions
    lower_is_better = ("corruption.relative_drop.",)
    rule_kinds = (RuleKind("max_corruption_drop", _judge_drop, plan=_plan_drop, required={"threshold": NUMBER},
                           optional={"corruption": (str,)}, needs="--checks corruption",
                           about=_drop_about),)

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        out = {f"corruption.accuracy.{name}": value for name, value in (section.get("mean") or {}).items()}
        drops = {k: v for k, v in (section.get("relative_drop") or {}).items() if v is not None}
        out.update({f"corruption.relative_drop.{name}": value for name, value in drops.items()})
        if drops:
            out["corruption.relative_drop.mean"] = round(sum(drops.values()) / len(drops), 6)
        return out

    @staticmethod
    def card_metrics(section) -> list[dict]:
        return [{"type": "corruption_accuracy", "name": f"Accuracy under {corruption} (mean over severities)",
                 "value": value} for corruption, value in (section.get("mean") or {}).items()]

    def summarize(self, rows, results, classes, attributes) -> dict:
        return summarize_corruption(rows, results["clean"].rows, self.opts, classes, attributes)

    def run(self, ctx, results) -> CheckResult:
        opts = self.opts
        seed = ctx.config.seed
        clean = ctx.clean_rows.set_index("sample_id")

        conditions = [(name, severity) for name in opts.corruptions for severity in levels(name, opts.severities)]

        def evaluate(batch) -> dict[str, np.ndarray]:
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            clean_pred = clean.loc[batch.sample_ids, "prediction"].to_numpy()
            parts = []
            for k, (name, severity) in enumerate(conditions):
                xc = corrupt(x, name, severity, seed=seed, sample_ids=batch.sample_ids)
                assert xc.shape == x.shape and float(xc.min()) >= 0.0 and float(xc.max()) <= 1.0
                cols = predict(ctx.model, xc, y)
                parts.append({"sample_id": np.asarray(batch.sample_ids), "condition": np.full(len(y), k), **cols,
                              "consistent": cols["prediction"] == clean_pred})
            return aggregate.stack_columns(parts)

        rows = self._assemble_rows(ctx, ctx.map_batches(evaluate, desc="corruption"), conditions)
        summary = self.summarize(rows, results, ctx.classes, ctx.dataset.attributes)
        report = {"grid": self._grid(ctx, opts), "failures": self._failures(ctx, rows, opts)}
        return CheckResult(self.name, rows, summary, report=report,
                           findings=cliff_findings(summary, rows, ctx.clean_rows))

    def _assemble_rows(self, ctx, batches: list[dict], conditions: list[tuple[str, int]]) -> pd.DataFrame:
        """Rows sorted by corruption name, severity and sample id, built from numpy columns rather than
        frames: at ImageNet scale these are the audit's largest table, and each copy of it counts."""
        empty = np.zeros(0, dtype=np.int64)
        res = aggregate.stack_columns(batches)
        column = lambda name: res.pop(name, empty)  # noqa: E731 - popped: each unsorted column freed once sorted
        rank = np.empty(len(conditions), dtype=np.int64)
        rank[sorted(range(len(conditions)), key=conditions.__getitem__)] = np.arange(len(conditions))
        order = np.lexsort((res.get("sample_id", empty), rank[res.get("condition", empty)]))
        cond = column("condition")[order]
        rows = ctx.base_rows(column("sample_id")[order])
        rows["check"] = self.name
        # indexing an object array repeats one string object per condition or class, not one per row
        rows["condition"] = np.array([condition_name(c, s) for c, s in conditions], dtype=object)[cond]
        rows["corruption"] = np.array([c for c, _ in conditions], dtype=object)[cond]
        rows["severity"] = np.array([s for _, s in conditions], dtype=np.int64)[cond]
        rows["prediction"] = column("prediction")[order]
        rows["prediction_name"] = np.array(ctx.classes, dtype=object)[rows["prediction"].to_numpy()]
        for col in ("correct", "confidence", "loss", "consistent"):
            rows[col] = column(col)[order]
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
                                                          sample_ids=batch.sample_ids)]
                     for s in levels(name, opts.severities)]
            out.append({"corruption": name, "cells": cells})
        return {"images": [to_data_uri(img) for img in x], "rows": out,
                "labels": [ctx.classes[int(c)] for c in batch.y]}

    def _failures(self, ctx, rows, opts) -> list[dict]:
        """Clean correct, corrupted wrong, most confident first; one per image, re-corrupted by its key."""
        ok = ctx.clean_rows.set_index("sample_id")["correct"].astype(bool)
        wrong = rows.loc[~rows["correct"] & ok.reindex(rows["sample_id"]).to_numpy(), ["confidence", "sample_id"]]
        picked = (wrong.sort_values(["confidence", "sample_id"], ascending=[False, True], kind="stable")
                  .drop_duplicates("sample_id").head(ctx.config.gallery_size).index)
        top = rows.loc[picked]  # whole rows for the few picked: sorting all wrong rows whole would copy them
        images = ctx.decoded(top["sample_id"].to_numpy())  # one decoding pass for the whole gallery
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
    was_correct = clean_rows.set_index("sample_id")["correct"].astype(bool)
    attrs = aggregate.group_columns(rows, attributes)
    results, per_class, per_group = [], [], {a: [] for a in attrs}
    # one condition at a time: grouping every condition's rows by class or attribute at once makes pandas
    # build several index arrays as long as all the rows at the peak
    for (name, severity), g in rows.groupby(["corruption", "severity"], sort=True):
        acc = aggregate.accuracy(g)
        key = {"corruption": name, "severity": int(severity)}
        before = was_correct.reindex(g["sample_id"]).to_numpy()
        broken, fixed = int((before & ~g["correct"].to_numpy()).sum()), int((~before & g["correct"].to_numpy()).sum())
        results.append({**key, "accuracy": acc["accuracy"], "accuracy_ci": acc["accuracy_ci"],
                        "consistency": round(float(g["consistent"].mean()), 6), "n": acc["n"],
                        "n_broken": broken, "n_fixed": fixed, "p_value": mcnemar_exact(broken, fixed)})
        per_class.extend({**key, **r} for r in aggregate.accuracy_by(g, ["label_name"]))
        for attr in attrs:
            narrow = g[["correct"]].assign(value=g[attr].astype(str))
            per_group[attr].extend({"attribute": attr, **key, **r} for r in aggregate.accuracy_by(narrow, ["value"]))
    order = {c: i for i, c in enumerate(opts.corruptions)}
    results.sort(key=lambda r: (order[r["corruption"]], r["severity"]))
    for r, p in zip(results, holm([r["p_value"] for r in results])):  # one family: every condition
        r["p_adjusted"] = p
    mean, drop, ce, rel_ce, consistency = {}, {}, {}, {}, {}
    for name in opts.corruptions:
        accs = [r["accuracy"] for r in results if r["corruption"] == name]
        mean[name] = round(sum(accs) / len(accs), 6)
        drop[name] = round((clean_acc - mean[name]) / clean_acc, 6) if clean_acc else None
        ce[name] = round(1 - mean[name], 6)  # ImageNet-C's CE before normalising by AlexNet's
        rel_ce[name] = round(clean_acc - mean[name], 6)  # mean error minus clean error
        consistency[name] = round(sum(r["consistency"] for r in results if r["corruption"] == name) / len(accs), 6)
    return {"corruptions": list(opts.corruptions), "severities": list(opts.severities), "clean_accuracy": clean_acc,
            "results": results, "mean": mean, "relative_drop": drop, "corruption_error": ce,
            "relative_corruption_error": rel_ce, "consistency": consistency,
            "per_class": [{**{k: v for k, v in r.items() if k != "label_name"}, "class": r["label_name"]}
                          for r in per_class],
            "per_group": [r for attr in attrs for r in per_group[attr]]}


CLIFF_FAIL_DROP = 0.20  # accuracy points lost at the worst severity for a `fail`
CLIFF_WARN_DROP = 0.05


def cliff_findings(summary: dict, rows: pd.DataFrame, clean: pd.DataFrame) -> list[Finding]:
    """Per corruption, its worst severity when the loss against clean is significant (exact McNemar on the
    same images, Holm across all conditions): where it falls, and the steepest step between severities.
    The interval is Newcombe's for the paired difference clean minus corrupted on the same images
    (stats.newcombe_paired_ci, from the images broken, fixed and unchanged). Its images: those it broke there
    (right on clean, wrong corrupted), the images the drop is made of; clean errors are other findings'."""
    out, clean_acc = [], summary["clean_accuracy"]
    right = set(clean.loc[clean["correct"].astype(bool), "sample_id"].astype(int))
    for name in summary["corruptions"]:
        levels = [r for r in summary["results"] if r["corruption"] == name]
        worst = min(levels, key=lambda r: r["accuracy"])
        drop = round(clean_acc - worst["accuracy"], 6)
        if drop < CLIFF_WARN_DROP or worst["p_adjusted"] >= ALPHA:
            continue
        path, steps = [clean_acc, *[r["accuracy"] for r in levels]], ["clean", *[str(r["severity"]) for r in levels]]
        fall, at = max((path[i] - path[i + 1], i) for i in range(len(levels)))
        broken = rows[(rows["condition"] == condition_name(name, worst["severity"])) & ~rows["correct"]]
        out.append(Finding(
            "fail" if drop >= CLIFF_FAIL_DROP else "warn", "corruption", "corruption_cliff", name,
            f"Under {name.replace('_', ' ')} accuracy falls to {100 * worst['accuracy']:.0f}% at severity "
            f"{worst['severity']} ({100 * drop:.0f} points below clean)",
            f"{worst['n_broken']} of {worst['n']} images broken, {worst['n_fixed']} fixed (McNemar, Holm-adjusted "
            f"{fmt_p(worst['p_adjusted'])}); steepest step {steps[at]} → {steps[at + 1]}: {100 * fall:.0f} points",
            effect=drop, ci=_paired_drop_ci(worst),
            p_adjusted=worst["p_adjusted"], evidence="#corruption",
            sample_ids=aggregate.most_confident_errors(broken, 6)["sample_id"].astype(int).tolist(),
            members=[s for s in broken["sample_id"].astype(int) if s in right]))
    return out


def _paired_drop_ci(result: dict) -> list[float] | None:
    """Interval for clean minus corrupted accuracy on the same images: right in both, broken (right only
    clean), fixed (right only corrupted), wrong in both."""
    n, broken, fixed = result["n"], result["n_broken"], result["n_fixed"]
    both = round(result["accuracy"] * n) - fixed
    return newcombe_paired_ci(both, broken, fixed, n - both - broken - fixed)
