"""Run a multi-label audit: every check once per label on the label's two-class view, check by check so the
labels share decoded batches and forward passes (shared.py), then the joint `multilabel` check."""

from __future__ import annotations

import re
import time

import torch

from ..context import AuditContext
from ..errors import AuditError
from ..findings import finding_id
from ..progress import log
from .shared import BatchCache, label_model
from .thresholds import logit, read_thresholds

JOINT = "multilabel"
SHARE = True  # labels share forward passes and decoded batches; benchmarks/bench_multilabel.py turns it off


def anchor(label: str) -> str:
    """The report anchor of a label's panel."""
    return "label-" + (re.sub(r"[^\w-]+", "-", label).strip("-").lower() or "unnamed")


def attacked_labels(config, labels: list[str]) -> list[str]:
    """--labels: the labels the adversarial check attacks (default every one)."""
    if not config.attack_labels:
        return list(labels)
    unknown = [n for n in config.attack_labels if n not in labels]
    if unknown:
        raise AuditError(f"--labels names {unknown[0]!r}, which is not one of the labels ({', '.join(labels)}).")
    return [n for n in labels if n in config.attack_labels]


def _randomized(ctx) -> bool:
    """Whether two passes over a few images differ (dropout left on, input noise): then no output is shared."""
    ids, shared = ctx.sample_ids[:16], ctx.model.model
    was, shared.enabled = shared.enabled, False
    try:
        return _differs(ctx, ids)
    finally:
        shared.enabled = was


def _differs(ctx, ids) -> bool:
    with torch.no_grad():
        for batch in ctx.batches(ids, progress=False):
            if not len(batch.sample_ids):
                continue
            x = batch.x.to(ctx.device)
            a, b = ctx.model.raw(x).float(), ctx.model.raw(x).float()
            return not torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    return False


def label_contexts(ctx, thresholds: list[float]) -> dict[str, AuditContext]:
    cache = BatchCache(max_bytes=None if SHARE else 0)
    out = {}
    for k, name in enumerate(ctx.classes):
        train = ctx.train_dataset.label_view(k) if ctx.train_dataset is not None else None
        out[name] = AuditContext(config=ctx.config, model=label_model(ctx.model, k, logit(thresholds[k])),
                                 loaded=ctx.loaded, dataset=ctx.dataset.label_view(k), sample_ids=ctx.sample_ids,
                                 shard=ctx.shard, skipped=list(ctx.skipped), train_dataset=train, batch_cache=cache)
    return out


def tag(result, label: str) -> None:
    """A label's findings name the label (subject, title, `label`) and point at its panel in the report."""
    for f in result.findings:
        f["label"] = label
        f["subject"] = f"{label}: {f['subject']}"
        f["title"] = f"{label}: {f['title']}"
        f["evidence"] = "#" + anchor(label)
        f["id"] = finding_id(f)  # made before the label was set: `check/kind/subject@label`


def retest_subgroups(per_label: dict, views: dict) -> None:
    """One Holm family for the subgroup gaps of every label and attribute (each label's check adjusted over
    its attributes alone), and the gap findings re-derived from the new verdicts."""
    from ..bias.groups import holm_verdicts
    from ..checks.subgroups import gap_findings
    from ..findings import coerce
    entries = [e for results in per_label.values() for r in results if r.name == "subgroups"
               and not r.summary.get("failed") for e in r.summary["attributes"].values()]
    holm_verdicts(entries)
    for name, results in per_label.items():
        for r in results:
            if r.name == "subgroups" and not r.summary.get("failed"):
                r.findings = [f for f in r.findings if f["kind"] != "subgroup_gap"] + [
                    coerce(f, r.name) for f in gap_findings(r.summary, views[name].clean_rows)]


def run_labels(ctx, names: list[str], check_options: dict, timing: dict, run_checks) -> tuple[list, dict, list]:
    """(the joint check's results, {label: [CheckResult]}, errors) of a multi-label audit. `run_checks` is the
    pipeline's loop over checks (pipeline._run_checks)."""
    from ..checks.multilabel import MultilabelCheck
    from ..pipeline import failed_result
    config, labels = ctx.config, list(ctx.classes)
    thresholds = read_thresholds(config.threshold, labels)
    attacked = attacked_labels(config, labels)
    shared = ctx.model.model
    shared.enabled = SHARE and not _randomized(ctx)
    if not shared.enabled and SHARE:
        log("the model is randomized at inference: its labels do not share forward passes", quiet=config.quiet)
    if config.budget is not None or config.precision is not None or config.plan is not None:
        log("--budget, --precision and --plan apply to single-label audits for now: every check of this multi-label audit covers "
            "every image", quiet=config.quiet)
    views = label_contexts(ctx, thresholds)
    per_label, errors = {n: [] for n in labels}, []
    sharing = shared.enabled
    for check in (n for n in names if n != JOINT):
        t = time.perf_counter()
        # an attack's queries never repeat across labels: hashing each would only cost time (a GPU's inputs are
        # copied to the host) and push the shared passes out of the cache
        shared.enabled = sharing and check != "adversarial"
        for name, view in views.items():
            if check == "adversarial" and name not in attacked:
                continue
            if not config.quiet:
                log(f"{check}: label {name!r}", quiet=config.quiet)
            results, _, errs = run_checks(view, [check], check_options, None, {})
            per_label[name].extend(results)
            errors.extend({**e, "check": f"{e['check']} ({name})", "label": name} for e in errs)
        timing[check] = time.perf_counter() - t
    shared.enabled = sharing
    retest_subgroups(per_label, views)
    for name, results in per_label.items():
        for r in results:
            tag(r, name)
    first = views[labels[0]]
    ctx.clean_rows, ctx.skipped, ctx.clipped = first.clean_rows, first.skipped, first.clipped
    ctx.results["clean"] = first.results["clean"]  # the model's randomness, as the first label measured it
    ctx.thresholds = thresholds
    t = time.perf_counter()
    done = {n: {r.name: r for r in rs if not r.summary.get("failed")} for n, rs in per_label.items()}
    try:
        joint = MultilabelCheck(None).run(ctx, done)
    except Exception as exc:  # the labels' own results still report
        joint = failed_result(JOINT, exc)
        errors.append({"check": JOINT, "error": joint.summary["error"], "traceback": joint.report["traceback"]})
        log(f"{JOINT}: FAILED ({joint.summary['error']}); the other checks go on", quiet=config.quiet)
    timing[JOINT] = time.perf_counter() - t
    if not joint.summary.get("failed"):
        cache = views[labels[0]].batch_cache
        joint.summary["shared_passes"] = {"shared": shared.enabled, "forward_hits": shared.hits,
                                          "forward_misses": shared.misses, "images_decoded": cache.images_decoded,
                                          "images_reused": cache.images_reused}
    return [joint], per_label, errors
