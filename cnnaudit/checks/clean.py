"""Clean evaluation: how good is the model on the data as it is?

Inputs: the wrapped model and every audited sample. Procedure: one forward pass per batch, no
perturbation. Outputs: one row per readable sample (condition `clean`), a skip record per file that
could not be decoded, and accuracy with a Wilson interval, per-class precision/recall/F1, the confusion
matrix and the expected calibration error, all derived from the rows.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pandas as pd

from .. import aggregate
from ..schema import CI, Count, Share
from ..errors import AuditError
from ..findings import Finding, fmt_p
from ..stats import ALPHA
from ..rules import NUMBER, RuleKind, result
from ..model.query import QueryError
from ..model.randomness import probe_randomness
from ..predict import predict
from ..datauri import to_data_uri
from ..stats import reliability_bins
from .base import Check, CheckResult
from .registry import register


MODEL_FAILED = "the model failed on it"
GIVE_UP = 3  # images in a row failing on their own, none answered yet: the endpoint is down, not these images


def _one_by_one(model, batch):
    """A batch a query-only model failed, one image at a time: (ids, prediction columns, [(id, why)] for the
    images it still fails on). They are listed with the unreadable files, never dropped silently; a later
    check whose queries fail after their retries fails as a whole (the others still report)."""
    ids, parts, failed = [], [], []
    for i, sid in enumerate(batch.sample_ids):
        try:
            parts.append(predict(model, batch.x[i:i + 1], batch.y[i:i + 1]))
            ids.append(sid)
        except QueryError as exc:
            failed.append((sid, str(exc)[:200]))
            if not ids and len(failed) >= GIVE_UP:
                raise
    return ids, (aggregate.stack_columns(parts) if parts else None), failed


def _judge_accuracy(rule, clean: dict) -> dict:
    v, t = clean["accuracy"], rule.params["threshold"]
    return result(rule, "clean.accuracy", v, t, v >= t, f"clean accuracy {v:.4f} (minimum {t})")


# --- summary.json's `clean` section (Check.section: the published schema is generated from it) ---
# "class" is a Python keyword, so this one is spelt the functional way
WeakClass = TypedDict("WeakClass", {
    "class": Any, "recall": Any, "n": Any, "rest_accuracy": Any, "gap": Any, "gap_ci": Any, "p_value": Any,
    "p_adjusted": Any})
WeakClass.__doc__ = """A class's recall against the accuracy on every other class: the gap with its interval and a
Fisher exact p-value, Holm-adjusted across classes."""


class Confusion(TypedDict):
    """One of the largest confusion pairs: how many images of class `true` are read as `predicted`, as a
    share of the class with its interval, and the most confident such errors."""
    true: Any
    predicted: Any
    count: Count
    n: Count
    share: Share
    share_ci: CI
    sample_ids: list[int]


class CleanSection(TypedDict):
    """Clean performance: accuracy on the data as it is, per class, weak classes and confusions."""
    accuracy: Share
    accuracy_ci: CI
    n: Count
    per_class: Any
    weak_classes: list[WeakClass]
    confusions: list[Confusion]


@register
class CleanCheck(Check):
    name = "clean"
    title = "Clean performance"
    template = "sections/clean.html.j2"
    section = CleanSection
    outcomes = ("correct",)  # right on the image as it is: the reference every other outcome is compared with
    finding_kinds = ("weak_class", "confusion", "stochastic")
    requires = ()  # the one check every other requires
    lower_is_better = ("clean.ece",)
    rule_kinds = (RuleKind("min_clean_accuracy", _judge_accuracy, required={"threshold": NUMBER}),)

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        return {f"clean.{key}": section[key] for key in ("accuracy", "ece") if section.get(key) is not None}

    @staticmethod
    def card_metrics(section) -> list[dict]:
        out = []
        if section.get("accuracy") is not None:
            out.append({"type": "accuracy", "name": "Clean accuracy", "value": section["accuracy"]})
        if section.get("ece") is not None:
            out.append({"type": "expected_calibration_error", "name": "Expected calibration error (15 bins)",
                        "value": section["ece"]})
        return out

    def summarize(self, rows, results, classes, attributes) -> dict:
        return summarize_clean(rows, classes)

    def run(self, ctx, results) -> CheckResult:
        def evaluate(batch):
            skipped = [{"path": ctx.dataset.path_of(sid), "reason": reason} for sid, reason in batch.skipped]
            ids, cols = batch.sample_ids, None
            if len(ids):
                try:
                    cols = predict(ctx.model, batch.x, batch.y)
                except QueryError:  # an endpoint failed the batch after its retries: find the images it fails on
                    ids, cols, failed = _one_by_one(ctx.model, batch)
                    skipped.extend({"path": ctx.dataset.path_of(sid), "reason": f"{MODEL_FAILED} ({why})"}
                                   for sid, why in failed)
            return ids, cols, skipped, batch.clipped, batch.exif_orientation

        parts, skipped_all, clipped_all = [], list(ctx.skipped), []  # ctx.skipped: files excluded before decoding
        for ids, cols, skipped, clipped, oriented in ctx.map_batches(evaluate, ctx.sample_ids, desc="clean"):
            skipped_all.extend(skipped)
            clipped_all.extend(clipped)
            if cols is not None:
                # the stored pixels were turned upright by this EXIF orientation (1: as stored), per sample,
                # so a sideways photo in the gallery can be traced to its file
                parts.append(pd.DataFrame({"sample_id": ids, **cols,
                                           "exif_orientation": [oriented.get(int(s), 1) for s in ids]}))
        if not parts:
            first = skipped_all[0]
            raise AuditError(f"None of the {len(ctx.sample_ids)} files in {str(ctx.dataset.root)!r} could be read "
                             f"as an image (e.g. {first['path']!r}: {first['reason']}); check the data folder.")
        rows = pd.concat(parts, ignore_index=True)
        rows = ctx.base_rows(rows["sample_id"]).assign(check="clean", condition="clean").join(
            rows.drop(columns="sample_id"))
        rows.insert(rows.columns.get_loc("prediction") + 1, "prediction_name",
                    [ctx.classes[p] for p in rows["prediction"]])
        summary = self.summarize(rows, results, ctx.classes, ctx.dataset.attributes)
        # a model property, measured here because it needs the clean predictions; every rank uses rank 0's answer
        summary["randomness"] = ctx.shard.broadcast(probe_randomness(ctx, rows) if ctx.shard.is_main else None)
        outputs = {"skipped": skipped_all, "clipped": [int(c) for c in clipped_all],
                   "exif_transposed": rows.loc[rows["exif_orientation"] != 1, "sample_id"].astype(int).tolist()}
        return CheckResult(self.name, rows, summary, report=self.report_data(ctx, rows),
                           findings=self.findings(ctx, summary, outputs, rows), outputs=outputs)

    def report_data(self, ctx, rows: pd.DataFrame) -> dict:
        errors = aggregate.most_confident_errors(rows, ctx.config.gallery_size)
        gallery = []
        for batch in ctx.batches(errors["sample_id"], progress=False):
            for sid, x in zip(batch.sample_ids, batch.x):
                r = errors[errors["sample_id"] == sid].iloc[0]
                gallery.append({"image": to_data_uri(x), "path": r["path"], "label": r["label_name"],
                                "prediction": r["prediction_name"], "confidence": float(r["confidence"])})
        return {"gallery": gallery,
                "reliability": reliability_bins(rows["confidence"].to_numpy(), rows["correct"].to_numpy())}

    def findings(self, ctx, summary: dict, outputs: dict, rows: pd.DataFrame) -> list[Finding]:
        out = [*weak_class_findings(summary, rows), *confusion_findings(summary, rows)]
        note = lambda severity, kind, subject, title: Finding(severity, self.name, kind, subject, title)  # noqa: E731
        if ctx.model.output_kind == "probabilities":
            out.append(note("info", "note", "model outputs", "The model outputs probabilities (rows sum to 1), not "
                            "logits; cnnaudit works on their logarithms. Saturated probabilities can hide gradients "
                            "from attacks."))
        if ctx.model.output_kind == "single_probability":
            out.append(note("info", "note", "model outputs", "The model has one output in [0, 1], read as the sigmoid "
                            f"probability of class {ctx.classes[ctx.model.positive_index]!r}; if it is a logit, pass "
                            "--output-kind single_logit."))
        randomness = summary["randomness"]
        if randomness["stochastic"]:
            agree = randomness["prediction_agreement"]
            out.append(note("warn", "stochastic", "model", f"The model is randomized at inference: on "
                            f"{randomness['randomness_probe_n']} images, three draws gave the same prediction for "
                            f"{100 * agree:.0f}% (logits moved by up to {100 * randomness['max_logit_change']:.2g}% "
                            f"of their range). Clean accuracy is one draw; attacks average gradients over "
                            f"{randomness['eot_draws']} draws (EOT) and count an example as broken only when most "
                            "of that many fresh draws misclassify it."))
        failed = [s for s in outputs["skipped"] if s["reason"].startswith(MODEL_FAILED)]
        unreadable = len(outputs["skipped"]) - len(failed)
        if unreadable:
            out.append(Finding("warn", self.name, "data", "unreadable files", f"{unreadable} file(s) "
                               "could not be read and were skipped (listed under Data).", evidence="#data"))
        if failed:  # an endpoint that fails on hard images must not look better for it
            n, k = summary["n"], round(summary["accuracy"] * summary["n"])
            out.append(Finding("warn", self.name, "data", "model failures", f"The model failed to answer on "
                               f"{len(failed)} image(s) (listed under Data); clean accuracy counts the {n} it answered: "
                               f"{100 * k / n:.1f}%, or {100 * k / (n + len(failed)):.1f}% with those counted as "
                               "errors.", evidence="#data"))
        if outputs["clipped"]:
            out.append(Finding("info", self.name, "data", "clipped values", f"{len(outputs['clipped'])} image(s) had "
                               "pixel values outside [0, 1] that were clipped.", evidence="#data",
                               sample_ids=outputs["clipped"][:6]))
        if outputs.get("exif_transposed"):
            out.append(Finding("info", self.name, "data", "EXIF orientation", f"{len(outputs['exif_transposed'])} "
                               "image(s) were stored rotated or mirrored with an EXIF orientation tag and were turned "
                               "upright before the audit (column exif_orientation of samples.csv).", evidence="#data",
                               sample_ids=outputs["exif_transposed"][:6]))
        return out


# A class or confusion is a `fail` when the test (or the interval) supports it and it is large enough to
# act on, a `warn` when it is supported but smaller; what the data cannot support is not a finding.
WEAK_CLASS_FAIL_GAP = 0.10  # recall at least 10 points below the other classes' accuracy
CONFUSION_FAIL_SHARE = 0.20  # the lower end of the share's interval: a fifth of the class or more
CONFUSION_WARN_SHARE = 0.05


def weak_class_findings(summary: dict, rows: pd.DataFrame) -> list[Finding]:
    """A finding per class recognised significantly less often than the others; its images: the class's
    misclassified ones."""
    out = []
    wrong = rows[~rows["correct"].astype(bool)]
    for r in summary["weak_classes"]:
        if r["gap"] > 0 and r["p_adjusted"] < ALPHA:
            out.append(Finding(
                "fail" if r["gap"] >= WEAK_CLASS_FAIL_GAP else "warn", "clean", "weak_class", r["class"],
                f"Class {r['class']!r} is recognised {100 * r['gap']:.0f} points less often than the others",
                f"recall {100 * r['recall']:.1f}% of {r['n']} vs {100 * r['rest_accuracy']:.1f}% on the other classes "
                f"(Fisher exact, Holm-adjusted {fmt_p(r['p_adjusted'])})", effect=r["gap"], ci=r["gap_ci"],
                p_adjusted=r["p_adjusted"], evidence="#clean-per-class", sample_ids=r["sample_ids"],
                members=wrong.loc[wrong["label"] == r["label"], "sample_id"]))
    return out


def confusion_findings(summary: dict, rows: pd.DataFrame) -> list[Finding]:
    """A finding per confusion pair whose share of its class is supported; its images: the class's images
    read as the other class."""
    out = []
    wrong = rows[~rows["correct"].astype(bool)]
    for c in summary["confusions"]:
        low = c["share_ci"][0]
        if low < CONFUSION_WARN_SHARE:
            continue
        out.append(Finding(
            "fail" if low >= CONFUSION_FAIL_SHARE else "warn", "clean", "confusion", f"{c['true']}→{c['predicted']}",
            f"{c['count']} of {c['n']} {c['true']!r} images are read as {c['predicted']!r}",
            f"{100 * c['share']:.0f}% of the class (95% interval {100 * c['share_ci'][0]:.0f}-"
            f"{100 * c['share_ci'][1]:.0f}%)", effect=c["share"], ci=c["share_ci"], evidence="#clean-confusion",
            sample_ids=c["sample_ids"], members=wrong.loc[(wrong["label_name"] == c["true"])
                                                          & (wrong["prediction_name"] == c["predicted"]), "sample_id"]))
    return out


def summarize_clean(rows: pd.DataFrame, classes: list[str]) -> dict:
    return {**aggregate.accuracy(rows),
            "per_class": aggregate.per_class(rows, classes),
            "confusion_matrix": aggregate.confusion(rows, len(classes)),
            "weak_classes": aggregate.weak_classes(rows, classes),
            "confusions": aggregate.confusions(rows, classes),
            "ece": aggregate.ece(rows)}

