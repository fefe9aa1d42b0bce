"""Release comparison: a candidate model against a baseline on the same images, paired.

Both models are audited with the same images, seed and options (the corruptions are the same draws per
sample: they are keyed by seed and sample id; attacks run per model). Per condition of every check that
declares per-image outcomes (Check.outcomes: clean; each adversarial budget's worst case; each corruption
and severity; worst-of-k shifts; a plugin's conditions), and per class and metadata group on clean images,
the two models' per-sample outcomes are paired: `n_improved` (wrong under the baseline, right under the
candidate), `n_regressed` (the reverse), the accuracy delta with Newcombe's interval for paired
proportions (stats.newcombe_paired_ci), and an exact McNemar p-value on the discordant pairs,
Holm-adjusted across all conditions. Two models that make the same decisions have no discordant pairs,
so nothing can be significant between them, whatever their logits' scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import aggregate
from .checks.outcomes import outcome_rows
from .gate.metrics import diff_findings
from .results import CRASH_LOG, REPORT
from .stats import ALPHA, holm, mcnemar_exact, newcombe_paired_ci, proportion

VERSION = "1.0"  # comparison.json's layout; bumped when a key changes
COMPARISON = "comparison.json"
FILES = (COMPARISON, REPORT, CRASH_LOG)  # what a comparison writes (or removes) in OUT, beside baseline/, candidate/


def _paired(check: str, condition: str, base: np.ndarray, cand: np.ndarray) -> dict:
    base, cand = base.astype(bool), cand.astype(bool)
    n = len(base)
    improved, regressed = int((~base & cand).sum()), int((base & ~cand).sum())
    both = int((base & cand).sum())
    delta = (cand.mean() - base.mean()) if n else None
    ci = newcombe_paired_ci(both, improved, regressed, n - both - improved - regressed)
    return {"check": check, "condition": condition, "n": n, "baseline_accuracy": proportion(int(base.sum()), n),
            "candidate_accuracy": proportion(int(cand.sum()), n),
            "delta": None if delta is None else round(float(delta), 6), "delta_ci": ci,
            "p_value": mcnemar_exact(regressed, improved), "n_improved": improved, "n_regressed": regressed}


def _outcomes(result) -> dict[tuple[str, str], pd.DataFrame]:
    """(check, condition) -> per-sample rows indexed by sample id (correct, prediction_name, confidence,
    label_name, path), from a result's rows."""
    out = {}
    classes = result.summary["data"]["classes"]
    for name, condition, rows in outcome_rows(result.results, reference=True,
                                              columns=["prediction", "prediction_name", "confidence", "label_name",
                                                       "path"]):
        if "prediction_name" not in rows:  # a check's rows with the class index only (a plugin's)
            rows = rows.assign(prediction_name=[classes[int(p)] for p in rows["prediction"]])
        out[(name, condition)] = rows.drop(columns=["condition", "prediction"]).set_index("sample_id")
    return out


@dataclass
class _LabelAudit:
    """One label of a multi-label audit, read like a single-label AuditResult."""
    summary: dict
    results: list


def _label_frames(baseline, candidate) -> list[tuple]:
    """(label or None, check, condition, baseline rows, candidate rows): per label for multi-label audits."""
    if not (baseline.per_label or candidate.per_label):
        return [(None, *f) for f in _paired_frames(baseline, candidate)]
    from .errors import AuditError
    from .gate.judge import label_summary
    if list(baseline.per_label) != list(candidate.per_label):
        raise AuditError("the two audits have different labels (" + ", ".join(baseline.per_label) + " vs "
                         + ", ".join(candidate.per_label) + "); compare models of the same labels.")
    out = []
    for name in baseline.per_label:
        a = _LabelAudit(label_summary(baseline.summary, name), baseline.per_label[name])
        b = _LabelAudit(label_summary(candidate.summary, name), candidate.per_label[name])
        out.extend((name, *f) for f in _paired_frames(a, b))
    return out


def _paired_frames(baseline, candidate) -> list[tuple[str, str, pd.DataFrame, pd.DataFrame]]:
    """(check, condition, baseline rows, candidate rows) on the same sample ids, for every condition both
    audits have, then each class and each metadata group on clean images."""
    a, b = _outcomes(baseline), _outcomes(candidate)
    out = []
    from .checks import registry
    apart = {name for name, check in registry().items()  # e.g. one model attacked white-box, one by Square alone
             if check.incomparable(baseline.summary.get(name) or {}, candidate.summary.get(name) or {})}
    a = {k: v for k, v in a.items() if k[0] not in apart}
    for key in [k for k in a if k in b]:
        ids = a[key].index.intersection(b[key].index)
        out.append((*key, a[key].loc[ids], b[key].loc[ids]))
    clean_a, clean_b = a.get(("clean", "clean")), b.get(("clean", "clean"))
    if clean_a is None or clean_b is None:
        return out
    base_rows = next(r.rows for r in baseline.results if r.name == "clean").set_index("sample_id")
    attributes = aggregate.group_columns(base_rows, baseline.summary["data"]["attributes"])
    labels = base_rows["label_name"].astype(str)
    for name in baseline.summary["data"]["classes"]:  # each class, clean: which class got worse
        ids = labels.index[labels == str(name)].intersection(clean_b.index)
        if len(ids):
            out.append(("class", str(name), clean_a.loc[ids], clean_b.loc[ids]))
    for attr in attributes:  # each metadata group, clean; a blank cell is in no group, as in the subgroups check
        values = aggregate.group_values(base_rows[attr])
        for value in sorted(values.dropna().unique()):
            ids = values.index[values == value].intersection(clean_b.index)
            out.append(("subgroups", f"{attr} = {value}", clean_a.loc[ids], clean_b.loc[ids]))
    return out


def _conditions_and_galleries(baseline, candidate, size: int) -> tuple[list[dict], list[dict]]:
    """The paired conditions sorted by adjusted p, and a gallery of regressed samples for each condition
    that regressed and is shown: clean, every metadata group, every significant regression."""
    frames = _label_frames(baseline, candidate)
    rows = [_paired(check, condition, a["correct"].to_numpy(), b["correct"].to_numpy())
            for _, check, condition, a, b in frames]
    for (label, *_), row in zip(frames, rows):
        if label is not None:  # a multi-label audit: each label's conditions, one Holm family over all of them
            row["label"] = label
    for row, p in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_adjusted"] = p
        row["significant"] = bool(p < ALPHA)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["p_adjusted"], rows[i].get("label") or "",
                                                    rows[i]["check"], rows[i]["condition"]))
    galleries, seen = [], {}
    for i in order:
        r = rows[i]
        if not size or not r["n_regressed"] or not (r["check"] in ("clean", "subgroups")
                                                     or (r["significant"] and r["delta"] < 0)):
            continue
        samples = _regressed(*frames[i][3:], size)
        label = (f"{r['label']}: " if r.get("label") else "") + f"{r['check']} · {r['condition']}"
        first = seen.setdefault(tuple(s["sample_id"] for s in samples), label)  # class 9's are clean's: said once
        galleries.append({**({"label": r["label"]} if r.get("label") else {}),
                          "check": r["check"], "condition": r["condition"], "n_regressed": r["n_regressed"],
                          "significant": r["significant"], "p_adjusted": r["p_adjusted"], "samples": samples,
                          "same_as": None if first == label else first})
    return [rows[i] for i in order], galleries


def _regressed(a: pd.DataFrame, b: pd.DataFrame, size: int) -> list[dict]:
    """Samples right under the baseline and wrong under the candidate, the candidate's most confident errors
    first (ties by sample id)."""
    ids = a.index[a["correct"].to_numpy() & ~b["correct"].to_numpy()]
    worst = b.loc[ids].assign(sid=ids).sort_values(["confidence", "sid"], ascending=[False, True]).head(size)
    return [{"sample_id": int(i), "path": r["path"], "label": r["label_name"],
             "baseline": a.loc[i, "prediction_name"], "candidate": r["prediction_name"]} for i, r in worst.iterrows()]


def verdicts(base: dict, cand: dict) -> list[dict]:
    """Each check's declared verdicts (Check.verdicts) under both models, changed ones first."""
    from .checks import registry
    out = []
    for name, check in registry().items():
        a = check.verdicts(base.get(name) or {}) if not (base.get(name) or {}).get("failed") else {}
        b = check.verdicts(cand.get(name) or {}) if not (cand.get(name) or {}).get("failed") else {}
        for subject in dict.fromkeys([*a, *b]):
            out.append({"check": name, "subject": subject, "baseline": a.get(subject), "candidate": b.get(subject),
                        "changed": a.get(subject) != b.get(subject)})
    return sorted(out, key=lambda v: not v["changed"])


@dataclass
class Comparison:
    baseline: object  # AuditResult
    candidate: object
    comparison: dict = field(default_factory=dict)
    thumbnails: dict = field(default_factory=dict)  # sample id -> data URI, for the report's galleries

    def stage(self, outputs) -> dict[str, Path]:
        """OUT/comparison.json, OUT/report.html (the comparison's) and each model's outputs in OUT/baseline
        and OUT/candidate, staged in one output set; returns the comparison's paths and the candidate's
        summary."""
        outputs.remove(CRASH_LOG)  # a crashed earlier compare's traceback is not this comparison's
        self.baseline.stage(outputs, "baseline/")
        candidate = self.candidate.stage(outputs, "candidate/")
        return {"comparison": outputs.add_json(COMPARISON, self.comparison),
                "report": outputs.add_text(REPORT, self.html()), "summary": candidate["summary"]}

    def write(self, out_dir) -> dict[str, Path]:
        """Everything `stage` names, written together (io.OutputSet)."""
        from .io import OutputSet
        with OutputSet(out_dir) as outputs:
            paths = self.stage(outputs)
            outputs.commit()
        return paths

    def model_card(self, data=None) -> str:
        """The candidate's model card, with what changed since the baseline."""
        from .report.model_card import model_card
        return model_card(self.candidate.summary, data=data, comparison=self.comparison)

    def html(self) -> str:
        from .report.render import environment
        return environment().get_template("comparison.html.j2").render(c=self.comparison, thumbs=self.thumbnails)


def compare(baseline_model, candidate_model, data, *, unsafe_pickle: bool = False, **settings) -> Comparison:
    """Audit both models on `data` with the same settings (those of cnnaudit.audit) and compare them, paired.

    Examples
    --------
    >>> c = cnnaudit.compare("v1/model.pt", "v2/model.pt", "data/", limit=500)  # doctest: +SKIP
    >>> [r for r in c.comparison["conditions"] if r["significant"]]  # doctest: +SKIP
    """
    from . import audit
    base = audit(baseline_model, data, unsafe_pickle=unsafe_pickle, **settings)
    cand = audit(candidate_model, data, unsafe_pickle=unsafe_pickle, **settings)
    return compare_results(base, cand, data=data)


def _model(summary: dict) -> dict:
    clean = summary.get("clean") or {}
    return {"path": summary["model"]["path"], "sha256": summary["model"]["sha256"],
            "clean_accuracy": clean.get("accuracy"), "clean_accuracy_ci": clean.get("accuracy_ci"),
            "n_findings": len(summary.get("findings") or []), "complete": not summary.get("errors")}


def compare_results(base, cand, *, data=None) -> Comparison:
    """The comparison of two finished audits of the same images with the same seed and options. With `data`
    (the audited folder or CSV), the report shows the regressed samples' thumbnails."""
    from .gate.metrics import diff
    seed = base.summary["seed"]
    # galleries as large as the audits' (config.gallery_size)
    rows, galleries = _conditions_and_galleries(base, cand, int(cand.summary["config"].get("gallery_size", 12)))
    comparison = {
        "version": VERSION,
        "baseline": _model(base.summary), "candidate": _model(cand.summary),
        "seed": seed, "n_samples": cand.summary["data"]["n_samples"], "conditions": rows,
        "n_significant": sum(r["significant"] for r in rows),
        "regressions": [r for r in rows if r["significant"] and r["delta"] < 0],
        "improvements": [r for r in rows if r["significant"] and r["delta"] > 0],
        "verdicts": verdicts(base.summary, cand.summary) + [
            {**v, "label": name} for name in base.per_label for v in verdicts(
                base.summary["per_label"][name], (cand.summary.get("per_label") or {}).get(name) or {})],
        "metrics": diff(base.summary, cand.summary),
        "findings": diff_findings(base.summary, cand.summary),
        "galleries": galleries,
        "gallery": next((g["samples"] for g in galleries if g["check"] == "clean"), []),
    }
    thumbs = _thumbnails(data, base.summary, {s["sample_id"] for g in galleries for s in g["samples"]}) if data else {}
    return Comparison(base, cand, comparison, thumbs)


def _thumbnails(data, summary: dict, ids) -> dict[int, str]:
    """Data URIs of the gallery's images, decoded the way the audit decoded them."""
    from .data import open_dataset
    from .data.loader import iter_batches
    from .datauri import thumbnail_uri
    if not ids:
        return {}
    config, (channels, *size) = summary["config"], summary["model"]["input_shape"]  # as the model saw them
    dataset = open_dataset(data, config.get("classes_file"), task=config.get("task", "auto"),
                           label_columns=config.get("label_columns"))
    return {int(sid): thumbnail_uri(x) for b in iter_batches(dataset, sorted(ids), channels=channels, size=tuple(size),
                                                              batch_size=64, max_pixels=config["max_pixels"])
            for sid, x in zip(b.sample_ids, b.x)}
