"""Per-label performance of a multi-label model: what only the joint view of its K outputs shows.

Inputs: the joint model's outputs on every readable image (one pass, shared with the labels' own clean
checks through multilabel/shared.py), each label's decision and truth from its clean rows, and the other
checks' per-label results (the adversarial rows for the label-set attack, the corruption rows for the
AUROC under corruption). Procedure (multilabel/metrics.py): per label, prevalence, AUROC with a DeLong
interval, average precision, sensitivity and specificity at the threshold (Wilson), precision,
calibration (ECE, Brier); macro and micro averages, subset accuracy, Hamming loss; label co-occurrence
and the most confused label pairs; AUROC per metadata group; under attack, a label set is robust at a
budget when no label's attack flips it (the worst case over the per-label attacks); under corruption,
each label's AUROC against its clean AUROC on the same images (paired DeLong, Holm over the family).
Outputs: one row per (image, label) (condition `clean`) with `target`, `truth`, `score` (the model's
output), `probability`, `decision` and `correct`; summary `multilabel`; findings for a label whose
sensitivity or AUROC is significantly below the others'. Only a multi-label audit runs it
(`inputs = ("multilabel",)`), on the joint model; every other check runs once per label.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import pandas as pd
import torch

from ..findings import Finding, fmt_p
from ..multilabel import metrics as mm
from ..rules import NUMBER, RuleKind, result, selected
from ..schema import CI, Count, NotRequired, Share
from ..stats import ALPHA, fisher_vs_rest, holm, p_value, proportion, wilson_ci
from .base import Check, CheckResult
from .registry import register

WEAK_LABEL_FAIL_GAP = 0.10  # sensitivity 10 points below the other labels' pooled sensitivity: a fail
WEAK_AUROC_FAIL_GAP = 0.10


class LabelRow(TypedDict):
    """One label at its threshold: prevalence, AUROC (DeLong interval), average precision, sensitivity and
    specificity (Wilson intervals), precision and calibration."""
    label: str
    threshold: float
    n: Count
    n_positive: Count
    prevalence: Share
    auroc: Share | None
    auroc_ci: CI
    average_precision: Share | None
    sensitivity: Share | None
    sensitivity_ci: CI
    specificity: Share | None
    specificity_ci: CI
    ece: Any
    brier: Any


class LabelSetRobustness(TypedDict):
    """At one attack budget: images whose whole label set is right clean and under every label's attack
    (`upper_bound`: some labels were not attacked, --labels, and count as robust)."""
    upper_bound: bool
    condition: str
    n: Count
    robust_subset_accuracy: Share | None
    robust_subset_accuracy_ci: CI
    labels_attacked: list[str]


class MultilabelSection(TypedDict):
    """A multi-label audit's joint view (its other checks' sections are per label, under `per_label`)."""
    labels: list[str]
    thresholds: dict[str, float]
    per_label: list[LabelRow]
    macro: Any
    micro: Any
    subset_accuracy: Share
    subset_accuracy_ci: CI
    hamming_loss: Share
    n_images: Count
    cooccurrence: Any
    confused_pairs: Any
    weak_labels: Any
    group_auroc: Any
    sensitivity_gaps: Any
    label_set_robustness: list[LabelSetRobustness]
    corruption_auroc: Any
    labels_attacked: NotRequired[list[str]]
    shared_passes: NotRequired[Any]


def _labels(rule, section) -> list[str]:
    return selected(rule, rule.params.get("label"), section["labels"], "label", "audit", "check the label name")


def _judge_label_metric(metric: str, what: str):
    def judge(rule, section) -> dict:
        rows = {r["label"]: r for r in section["per_label"]}
        names, t = _labels(rule, section), rule.params["threshold"]
        values = {n: rows[n][metric] for n in names}
        unmeasured = [n for n, v in values.items() if v is None]
        measured = {n: v for n, v in values.items() if v is not None}
        worst = min(measured, key=measured.get) if measured else None
        failing = [n for n, v in measured.items() if v < t]
        detail = "; ".join(f"{n} {v:.4f}" for n, v in measured.items()) + f" (minimum {t})"
        if unmeasured:  # a label without positives (or negatives) has no evidence: never a pass
            detail += f"; not measurable (one class absent): {', '.join(unmeasured)}"
            failing += unmeasured
        out = result(rule, f"multilabel.{metric}.{worst or names[0]}", measured.get(worst), t, not failing,
                     f"{what}: {detail}" + (f"; below: {', '.join(failing)}" if failing else ""))
        out["label"] = (failing or [worst or names[0]])[0]  # the label that decided it, as per-label rules say
        return out
    return judge


RULES = tuple(RuleKind(f"min_{m}", _judge_label_metric(m, what), required={"threshold": NUMBER},
                       optional={"label": (str,)}, needs="multi-label data")
              for m, what in (("auroc", "AUROC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                              ("average_precision", "average precision")))


@register
class MultilabelCheck(Check):
    name = "multilabel"
    title = "Per-label performance"
    template = "sections/multilabel.html.j2"
    section = MultilabelSection
    requires = ()
    inputs = ("multilabel",)  # multi-label data; run on the joint model by multilabel/audit.py
    finding_kinds = ("weak_label", "sensitivity_gap")
    rule_kinds = RULES

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        out = {}
        for r in section.get("per_label", []):
            for key in ("auroc", "average_precision", "sensitivity", "specificity"):
                if r.get(key) is not None:
                    out[f"multilabel.{key}.{r['label']}"] = r[key]
        for key in ("subset_accuracy", "hamming_loss"):
            if section.get(key) is not None:
                out[f"multilabel.{key}"] = section[key]
        for key in ("auroc", "average_precision"):
            if (section.get("macro") or {}).get(key) is not None:
                out[f"multilabel.macro_{key}"] = section["macro"][key]
        return out

    lower_is_better = ("multilabel.hamming_loss",)

    @classmethod
    def card_metrics(cls, section) -> list[dict]:
        out = []
        for r in section.get("per_label", []):
            for key, name in (("auroc", "AUROC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity")):
                if r.get(key) is not None:
                    out.append({"type": f"{key}", "name": f"{name} ({r['label']}, threshold {r['threshold']:g})",
                                "value": r[key]})
        if section.get("subset_accuracy") is not None:
            out.append({"type": "subset_accuracy", "name": "Subset accuracy", "value": section["subset_accuracy"]})
        return out

    def run(self, ctx, results) -> CheckResult:
        """`ctx` is the joint model's context; `results` {label: {check: CheckResult}} of the labels' checks."""
        labels, thresholds = list(ctx.classes), list(ctx.thresholds)
        clean = {n: results[n]["clean"].rows.set_index("sample_id") for n in labels}
        ids = clean[labels[0]].index.to_numpy()
        scores = np.concatenate(ctx.map_batches(lambda b: _outputs(ctx.model, b.x), ids, desc="multilabel"))
        rows = self.rows(ctx, ids, scores, clean, labels)
        summary = self.summarize(rows, results, labels, _grouped(ctx), thresholds=thresholds,
                                 min_group_size=_min_group_size(ctx))
        summary["labels_attacked"] = [n for n in labels if "adversarial" in results[n]]  # and did not fail
        return CheckResult(self.name, rows, summary, findings=self.findings(summary))

    @staticmethod
    def rows(ctx, ids, scores, clean, labels) -> pd.DataFrame:
        probabilities = ctx.model.output_kind == "probabilities"
        base = ctx.base_rows(ids)
        frames = []
        for k, name in enumerate(labels):
            c = clean[name].loc[ids]
            score = scores[:, k].astype(np.float64)
            frames.append(base.assign(check="multilabel", condition="clean", target=name,
                                      truth=c["label"].to_numpy().astype(np.int64), score=score,
                                      probability=score if probabilities else 1 / (1 + np.exp(-score)),
                                      decision=c["prediction"].to_numpy() == 1, correct=c["correct"].to_numpy()))
        return pd.concat(frames, ignore_index=True)

    def summarize(self, rows, results, classes, attributes, *, thresholds=None, min_group_size=30) -> dict:
        labels = list(dict.fromkeys(rows["target"]))
        wide = {c: rows.pivot(index="sample_id", columns="target", values=c)[labels] for c in
                ("truth", "probability", "score", "decision")}
        truth, prob = wide["truth"].to_numpy().astype(int), wide["probability"].to_numpy().astype(float)
        decision, score = wide["decision"].to_numpy().astype(bool), wide["score"].to_numpy().astype(float)
        if thresholds is None:
            thresholds = [results.get("thresholds", {}).get(n, 0.5) for n in labels]
        per_label = mm.label_metrics(truth, prob, decision, labels, thresholds)
        for r, k in zip(per_label, range(len(labels))):  # AUROC ranks the model's own output (no sigmoid rounding)
            r.update(mm.auroc_ci(truth[:, k], score[:, k]))
        out = {"labels": labels, "thresholds": dict(zip(labels, thresholds)), "per_label": per_label,
               **mm.averages(truth, prob, decision, per_label),
               "cooccurrence": mm.cooccurrence(truth, labels),
               "confused_pairs": mm.confused_pairs(truth, decision, labels),
               "weak_labels": weak_labels(per_label, truth, decision, labels, score),
               "group_auroc": group_auroc(rows, attributes, labels, min_group_size),
               "sensitivity_gaps": sensitivity_gaps(rows, attributes, labels, min_group_size),
               "label_set_robustness": label_set_robustness(results, labels),
               "corruption_auroc": corruption_auroc(results, labels, rows)}
        return out

    def findings(self, summary: dict) -> list[Finding]:
        out = []
        for e in summary["sensitivity_gaps"]:
            if e["significant"]:
                out.append(Finding(
                    "fail" if e["gap"] >= WEAK_LABEL_FAIL_GAP else "warn", self.name, "sensitivity_gap",
                    f"{e['label']}: {e['attribute']} = {e['worst']}",
                    f"{e['label']}: found {100 * e['gap']:.1f} points less often on {e['attribute']} = {e['worst']} "
                    f"than on {e['best']}",
                    f"sensitivity among the images with the label; 95% interval {100 * e['gap_ci'][0]:.1f}-"
                    f"{100 * e['gap_ci'][1]:.1f} points; Fisher exact, Holm over labels x attributes "
                    f"{fmt_p(e['p_adjusted'])}", effect=e["gap"], ci=e["gap_ci"], p_adjusted=e["p_adjusted"],
                    evidence="#multilabel-groups", label=e["label"]))
        for w in summary["weak_labels"]:
            if w["measure"] == "sensitivity" and w["p_adjusted"] is not None and w["p_adjusted"] < ALPHA and w["gap"] > 0:
                out.append(Finding(
                    "fail" if w["gap"] >= WEAK_LABEL_FAIL_GAP else "warn", self.name, "weak_label", w["label"],
                    f"Label {w['label']!r} is found {100 * w['gap']:.0f} points less often than the other labels",
                    f"sensitivity {100 * w['value']:.1f}% of {w['n']} images with it vs {100 * w['rest']:.1f}% for the "
                    f"other labels (Fisher exact, Holm-adjusted over labels {fmt_p(w['p_adjusted'])})",
                    effect=w["gap"], ci=w.get("gap_ci"), p_adjusted=w["p_adjusted"], evidence="#multilabel",
                    label=w["label"], key="sensitivity"))  # id multilabel/weak_label/sensitivity@<label>
            if w["measure"] == "auroc" and w["significant"]:
                out.append(Finding(
                    "fail" if w["gap"] >= WEAK_AUROC_FAIL_GAP else "warn", self.name, "weak_label", w["label"],
                    f"Label {w['label']!r} ranks its images worse than the other labels (AUROC "
                    f"{w['value']:.3f} vs {w['rest']:.3f})",
                    f"the upper end of its {100 * w['confidence']:.1f}% DeLong interval ({w['ci'][1]:.3f}, "
                    "Bonferroni over the labels) is below the other labels' macro AUROC", effect=w["gap"], evidence="#multilabel", label=w["label"],
                    key="auroc"))  # one label's two weak_label findings have ids of their own
        return out


def _outputs(model, x) -> np.ndarray:
    with torch.no_grad():
        return model.raw(x.to(model.device)).float().cpu().numpy()


def _grouped(ctx) -> list[str]:
    """The attributes the subgroups check compares: --group-by, else every one but the artifacts (which the
    shortcuts check tests)."""
    from .subgroups import _artifacts
    group_by = ctx.config.options.get("subgroups", {}).get("group_by")
    if group_by:
        return [ctx.dataset.renamed.get(a, a) for a in group_by]
    artifacts = set(_artifacts(ctx.config))
    return [a for a in ctx.dataset.attributes if a not in artifacts]


def _min_group_size(ctx) -> int:
    return int(ctx.config.options.get("subgroups", {}).get("min_group_size", 30) or 30)


def weak_labels(per_label, truth, decision, labels, score) -> list[dict]:
    """Each label's sensitivity against the other labels' pooled sensitivity (Fisher exact, Holm over the
    labels; the labels share images, so the test treats them as independent samples, which they are only
    approximately), and its AUROC against the other labels' macro AUROC: significant when the upper end of
    its DeLong interval at 1 - 0.05 / K (Bonferroni over the K labels) is below it."""
    found = (truth == 1) & decision
    tp, pos = found.sum(axis=0), (truth == 1).sum(axis=0)
    sens = []
    for k, name in enumerate(labels):
        if pos[k] == 0 or pos.sum() - pos[k] == 0:
            continue
        rest_k, rest_n = int(tp.sum() - tp[k]), int(pos.sum() - pos[k])
        sens.append({"label": name, "measure": "sensitivity", "value": proportion(int(tp[k]), int(pos[k])),
                     "n": int(pos[k]), "rest": proportion(rest_k, rest_n),
                     "gap": round(rest_k / rest_n - tp[k] / pos[k], 6),
                     "p_value": p_value(fisher_vs_rest(int(tp[k]), int(pos[k]), int(tp.sum()), int(pos.sum())))})
    for s, adj in zip(sens, holm([s["p_value"] for s in sens]) if sens else []):
        s["p_adjusted"] = p_value(adj)
    aurocs = []
    for r in per_label:
        others = [o["auroc"] for o in per_label if o["label"] != r["label"] and o["auroc"] is not None]
        if r["auroc"] is None or not others:
            continue
        rest = float(np.mean(others))
        k = labels.index(r["label"])
        wide = mm.auroc_ci(truth[:, k], score[:, k], confidence=1 - ALPHA / len(labels))["auroc_ci"]
        aurocs.append({"label": r["label"], "measure": "auroc", "value": r["auroc"], "ci": wide,
                       "confidence": round(1 - ALPHA / len(labels), 6),
                       "rest": round(rest, 6), "gap": round(rest - r["auroc"], 6),
                       "significant": bool(wide and wide[1] < rest)})
    return sens + aurocs


def group_auroc(rows, attributes, labels, min_size) -> dict:
    """{attribute: {label: per-group AUROC rows}} for the categorical metadata columns."""
    from .. import aggregate
    first = rows[rows["target"] == labels[0]]
    out = {}
    for attr in aggregate.group_columns(first, attributes):
        out[attr] = {}
        for name in labels:
            r = rows[rows["target"] == name]
            out[attr][name] = mm.group_auroc(r["truth"].to_numpy(), r["score"].to_numpy(),
                                             aggregate.group_values(r[attr]), min_size)
    return out


def sensitivity_gaps(rows, attributes, labels, min_size) -> list[dict]:
    """Per label and categorical attribute: each group's sensitivity (among its images with the label; a group
    with fewer than `min_size` of them is not compared) and the gap between the best and the worst group
    (bias/groups.gap: Newcombe interval, Fisher exact, Bonferroni over the pairs), Holm over labels x
    attributes. A label's accuracy gap (its subgroups section) mixes sensitivity and specificity by the
    group's prevalence; this separates the part that misses the finding."""
    from .. import aggregate
    from ..bias.groups import gap, holm_verdicts
    first = rows[rows["target"] == labels[0]]
    out = []
    for i, attr in enumerate(aggregate.group_columns(first, attributes)):
        for name in labels:
            pos = rows[(rows["target"] == name) & (rows["truth"] == 1) & aggregate.present(rows[attr])]
            groups = []
            for value, g in pos.groupby(aggregate.group_values(pos[attr]), sort=True):
                k, n = int(g["decision"].sum()), len(g)
                groups.append({"value": value, "n": n, "sensitivity": proportion(k, n), "sensitivity_n": n,
                               "sensitivity_ci": wilson_ci(k, n), "insufficient": n < min_size})
            out.append({"label": name, "attribute": attr, "groups": groups,
                        **gap(groups, seed=i, measure="sensitivity")})
    holm_verdicts(out)
    return out


def label_set_robustness(results, labels) -> list[dict]:
    """Per attack budget: the share of images whose label set stays right under every attacked label's attack
    (an image any label's attack flips is not robust): the worst case over the per-label attacks."""
    attacked = [n for n in labels if "adversarial" in results[n] and len(results[n]["adversarial"].rows)]
    if not attacked:
        return []
    every = len(attacked) == len(labels)  # else the labels not attacked count as robust: an upper bound
    clean_ok = None
    for n in labels:
        c = results[n]["clean"].rows.set_index("sample_id")["correct"]
        clean_ok = c if clean_ok is None else clean_ok & c.reindex(clean_ok.index, fill_value=False)
    out = []
    frames = {n: results[n]["adversarial"].rows for n in attacked}
    for condition in dict.fromkeys(frames[attacked[0]]["condition"]):
        ok = clean_ok.copy()
        for n in attacked:
            r = frames[n]
            r = r[r["condition"] == condition].set_index("sample_id")["correct"].astype(bool)
            ok = ok & r.reindex(ok.index, fill_value=False)
        k, total = int(ok.sum()), int(len(ok))
        out.append({"condition": str(condition), "n": total, "robust_subset_accuracy": proportion(k, total),
                    "robust_subset_accuracy_ci": wilson_ci(k, total), "labels_attacked": attacked,
                    "upper_bound": not every})
    return out


def _view_probability(rows) -> np.ndarray:
    """The label's probability from a two-class view's prediction and confidence."""
    conf = rows["confidence"].to_numpy(float)
    return np.where(rows["prediction"].to_numpy() == 1, conf, 1 - conf)


def corruption_auroc(results, labels, rows) -> list[dict]:
    """Per label and corruption condition: AUROC under the corruption against clean AUROC on the same images
    (paired DeLong), Holm over every (label, condition). Both scores are the label's probability as its
    two-class view's rows record it (prediction and float32 confidence), so clean and corrupted are read at
    the same precision: an unchanged output cannot show a drop from rounding alone."""
    out = []
    for name in labels:
        if "corruption" not in results[name] or not len(results[name]["corruption"].rows):
            continue
        clean = rows[rows["target"] == name].set_index("sample_id")
        view = results[name]["clean"].rows.set_index("sample_id")
        clean = clean.assign(probability=_view_probability(view.loc[clean.index]))
        cr = results[name]["corruption"].rows
        for condition, g in cr.groupby("condition", sort=False):
            g = g.set_index("sample_id")
            ids = g.index.intersection(clean.index)
            if not len(ids):
                continue
            pred = g.loc[ids, "prediction"].to_numpy()
            p_corrupt = _view_probability(g.loc[ids])
            truth = clean.loc[ids, "truth"].to_numpy()
            test = mm.delong_paired(truth, clean.loc[ids, "probability"].to_numpy(float), p_corrupt)
            pos = truth == 1
            sens_clean = proportion(int(clean.loc[ids, "decision"].to_numpy()[pos].sum()), int(pos.sum()))
            sens = proportion(int((pred[pos] == 1).sum()), int(pos.sum()))
            out.append({"label": name, "condition": str(condition), "n": int(len(ids)),
                        "auroc_clean": test["auroc_a"], "auroc": test["auroc_b"],
                        "drop": test["difference"], "drop_ci": test["difference_ci"], "p_value": test["p_value"],
                        "sensitivity_clean": sens_clean, "sensitivity": sens})
    tested = [o for o in out if o["p_value"] is not None]
    for o, adj in zip(tested, holm([o["p_value"] for o in tested]) if tested else []):
        o["p_adjusted"] = p_value(adj)
    for o in out:
        o.setdefault("p_adjusted", None)
    return out
